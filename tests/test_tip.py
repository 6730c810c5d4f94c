"Tip-Adapter from YAML through the command line: a run writes its metrics; retrieval and bad options are refused."
import json
import pytest
import torch
from clip_strategies.callback import Callback
from clip_strategies.cli import train_main

QUICK = ['--no-progress', 'DATASET.NUM_SHOTS', '4']

@pytest.mark.parametrize('name, extra', [('tip', ['TRAINER.TIP.AUGMENT_EPOCH', '2']),
                                         ('tip_f', ['TRAINER.TIP_F.AUGMENT_EPOCH', '2', 'TRAINER.TIP_F.EPOCHS', '3'])])
def test_cli_run_writes_metrics(tmp_path, name, extra):
    out = tmp_path/name
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', name, *extra, 'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == name and m['trainable_params'] == 0 and m['history'] == []
    assert m['accuracy'] >= m['before']['accuracy'] - 1e-9, (m['accuracy'], m['before']['accuracy'])
    # the fitted adapter is kept in learned.safetensors: loaded on a fresh model it scores the run's test accuracy
    from clip_strategies.models import load_clip
    from clip_strategies.data import get_dataset
    from clip_strategies.strategy import load_learned
    model, prep, tok = load_clip('mini')
    s = load_learned(model, out/'learned.safetensors', 'mini')
    assert s.name == name and s.found is not None
    from clip_strategies.evaluate import evaluate
    assert evaluate(model, tok, get_dataset('mini_shift', split='test', transform=prep), strategy=s)['top1'] == pytest.approx(m['accuracy'], abs=1e-4)

def test_cli_refuses_retrieval(tmp_path, capsys):
    out = tmp_path/'ret'
    assert train_main(['--config', 'mini', '--no-progress', 'DATASET.NAME', 'mini_captions', 'TRAINER.NAME', 'tip',
                       'OUTPUT_DIR', str(out)]) == 2
    assert 'classification only' in capsys.readouterr().err
    assert not (out/'metrics.json').exists()

def test_cli_bad_option(tmp_path, capsys):
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', 'tip', 'TRAINER.TIP.SEARCH_SCALE', '[7, 0.05]',
                       'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    assert 'SEARCH_SCALE = [7, 0.05]: option search_scale' in capsys.readouterr().err

def test_yaml_original_keys_build_options(tmp_path):
    "Intel's clip_finetune keys (TRAINER.TIP.*, partly lower case) in a YAML file set tip's and tip_f's options."
    from clip_strategies.config import load_config
    y = tmp_path/'tip.yaml'
    y.write_text("TRAINER:\n  NAME: tip_f\n  TIP:\n    LOAD_CACHE: false\n    AUGMENT_EPOCH: 2\n    NEW: true\n    NEW_DATASET: false\n"
                 "    CACHE_SIZE: 7\n    beta: 3.5\n    alpha: 0.5\n    search_best: false\n")
    s = load_config(y).build_strategy()
    assert (s.name, s.load_cache, s.augment_epoch, s.new, s.new_dataset, s.cache_size, s.beta, s.alpha, s.search_best) == \
           ('tip_f', False, 2, True, False, 7, 3.5, 0.5, False)
    s = load_config(None, {'TRAINER.NAME': 'tip', 'TRAINER.TIP.CACHE': str(tmp_path/'c.safetensors'), 'TRAINER.TIP.NEW_DATASET': True}).build_strategy()
    assert s.new_dataset and s.load_cache and s.cache_size == 100

def test_cli_new_dataset_merges(tmp_path, capsys):
    "NEW_DATASET without a cache file is refused; after a first run it merges a second dataset into the file."
    from clip_strategies.core import read_safetensors
    cache = str(tmp_path/'cache.safetensors')
    common = ['--config', 'mini', *QUICK, 'TRAINER.NAME', 'tip', 'TRAINER.TIP.AUGMENT_EPOCH', '0', 'TRAINER.TIP.CACHE', cache]
    assert train_main([*common, 'TRAINER.TIP.NEW_DATASET', 'true', 'OUTPUT_DIR', str(tmp_path/'a')]) != 0
    assert 'no cache file at' in capsys.readouterr().err
    assert train_main([*common, 'OUTPUT_DIR', str(tmp_path/'b')]) == 0
    assert train_main([*common, 'DATASET.NAME', 'mini_shapes', 'TRAINER.TIP.NEW_DATASET', 'true', 'OUTPUT_DIR', str(tmp_path/'c')]) == 0
    t, meta = read_safetensors(cache)
    assert [d['dataset'] for d in json.loads(meta['datasets'])] == ['mini_shift', 'mini_shapes'] and len(t['keys']) == 2 * 4 * 8

class _CutAfter(Callback):
    "A callback that interrupts a Learner after epoch `at`, once that epoch's checkpoint is written (as a kill would)."
    run_after = ('checkpoint',)
    def __init__(self, at): self.at = at
    def after_epoch(self, learn):
        if learn.epoch == self.at: raise KeyboardInterrupt

def test_tip_f_interrupted_during_key_fine_tuning_resumes_exactly(tmp_path, monkeypatch):
    "Cut after epoch 1 of 8 of the key fine-tuning, then `--resume`: every loss, alpha/beta, the keys and the accuracy equal an uninterrupted run's."
    from clip_strategies.callbacks import RunContext
    from clip_strategies.checkpoint import read_checkpoint
    from clip_strategies.strategy import read_learned
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'tip_f', 'DATASET.NUM_SHOTS', '4', 'DATASET.ALSO_TEST', '[]',
            'TRAINER.TIP_F.AUGMENT_EPOCH', '3', 'TRAINER.TIP_F.EPOCHS', '8', 'TRAINER.TIP_F.LR', '0.03', 'TRAINER.TIP_F.BATCH_SIZE', '8']
    whole, cut = tmp_path/'whole', tmp_path/'cut'
    assert train_main([*args, 'OUTPUT_DIR', str(whole)]) == 0
    learner = RunContext.learner
    def cut_key_learner(self, model, dls, objective, lr, epochs, opt_func=None, cbs=(), part='', **k):
        return learner(self, model, dls, objective, lr, epochs, opt_func, [*cbs, *([_CutAfter(1)] if part == 'tip_f' else [])], part, **k)
    monkeypatch.setattr(RunContext, 'learner', cut_key_learner)
    assert train_main([*args, 'OUTPUT_DIR', str(cut)]) == 130  # Ctrl-C: one line on what was saved, exit 130
    monkeypatch.undo()
    assert not (cut/'metrics.json').exists() and read_checkpoint(cut/'checkpoints'/'tip_f')['meta']['epoch'] == 1
    assert train_main([*args, 'OUTPUT_DIR', str(cut)]) == 2  # without --resume the folder is refused
    assert train_main(['--resume', *args, 'OUTPUT_DIR', str(cut)]) == 0
    m_whole, m_cut = (json.loads((d/'metrics.json').read_text()) for d in (whole, cut))
    assert m_cut['accuracy'] == m_whole['accuracy'] and m_cut['nll'] == m_whole['nll']
    (_, _, f_whole), (_, _, f_cut) = (read_learned(d/'learned.safetensors', 'mini') for d in (whole, cut))
    assert (f_cut['alpha'], f_cut['beta'], f_cut['found']) == (f_whole['alpha'], f_whole['beta'], f_whole['found'])
    assert torch.equal(f_cut['cache_keys'], f_whole['cache_keys'])
    ck_whole, ck_cut = (read_checkpoint(d/'checkpoints'/'tip_f')['info']['cbs'] for d in (whole, cut))
    losses = lambda ck: [(r['epoch'], r.get('loss'), r.get('train_loss'), r.get('valid_loss')) for r in ck['recorder']['history']]
    assert losses(ck_cut) == losses(ck_whole) and len(losses(ck_whole)) == 8 * 4 + 8  # 4 batches of 8 keys an epoch, and the epoch lines
    assert ck_whole['best_epoch']['best_epoch'] > 1  # the keys kept were trained after the cut: the resumed epochs decide them

# Issue 19, items 1 and 2: a Tip cache records what it was built from (backbone, augmentation, dataset, classes, shots,
# seed and a checksum of the training split) and is refused for anything else; a NEW_DATASET merge is idempotent.
TIP0 = ['--config', 'mini', '--no-progress', 'DATASET.ALSO_TEST', '[]', 'TRAINER.NAME', 'tip', 'TRAINER.TIP.AUGMENT_EPOCH', '0']

def _accuracy(out): return json.loads((out/'metrics.json').read_text())['accuracy']

def test_a_cache_from_seed_1_is_refused_for_seed_2(tmp_path, capsys):
    "Two train runs sharing one cache file: seed 2 is refused, naming the seed (it used to read seed 1's cache silently)."
    cache = str(tmp_path/'shared.safetensors')
    run = lambda seed, name: train_main([*TIP0, 'DATASET.NUM_SHOTS', '4', 'SEED', str(seed), 'TRAINER.TIP.CACHE', cache,
                                         'OUTPUT_DIR', str(tmp_path/name)])
    assert run(1, 's1') == 0
    capsys.readouterr()
    assert run(2, 's2') == 2
    err = capsys.readouterr().err
    assert 'seed: cache has 1, this run needs 2' in err and 'split: cache has' in err and '{seed}' in err, err
    assert not (tmp_path/'s2'/'metrics.json').exists()

def test_a_comparison_over_seeds_keeps_one_cache_per_seed(tmp_path, capsys):
    "A comparison over seeds 1, 2 with TRAINER.TIP.CACHE holding {seed}: each seed builds and reads its own file, and its "
    "accuracy is that of a run without any cache file (before: one file for both, and seed 2 scored with seed 1's cache)."
    from clip_strategies.compare import compare_main
    out, cache = tmp_path/'cmp', str(tmp_path/'caches'/'tip_{dataset}_{shots}shot_seed{seed}.safetensors')
    assert compare_main(['--config', 'mini', '--strategies', 'tip', '--shots', '4', '--seeds', '1,2', '--no-progress',
                         '--out', str(out), 'DATASET.ALSO_TEST', '[]', 'TRAINER.TIP.AUGMENT_EPOCH', '0',
                         'TRAINER.TIP.CACHE', cache]) == 0, capsys.readouterr().err
    assert train_main([*TIP0, 'DATASET.NUM_SHOTS', '4', 'SEED', '2', 'OUTPUT_DIR', str(tmp_path/'plain2')]) == 0
    rows = json.loads((out/'results.json').read_text())
    assert [r['accuracy'] for r in rows if r['seed'] == 2] == [_accuracy(tmp_path/'plain2')]
    from clip_strategies.tip import read_cache
    for seed in (1, 2):
        _, prov = read_cache(tmp_path/'caches'/f'tip_mini_shift_4shot_seed{seed}.safetensors')
        assert [(d['dataset'], d['shots'], d['seed']) for d in prov['datasets']] == [('mini_shift', 4, seed)]

def test_a_cache_is_refused_for_another_dataset_or_shots(tmp_path, capsys):
    "A cache of mini_shift at 4 shots, asked for mini_shapes (the same eight class names) or for 2 shots, is refused naming the field."
    cache = str(tmp_path/'c.safetensors')
    common = [*TIP0, 'TRAINER.TIP.CACHE', cache]
    assert train_main([*common, 'DATASET.NUM_SHOTS', '4', 'OUTPUT_DIR', str(tmp_path/'a')]) == 0
    capsys.readouterr()
    assert train_main([*common, 'DATASET.NUM_SHOTS', '4', 'DATASET.NAME', 'mini_shapes', 'OUTPUT_DIR', str(tmp_path/'b')]) == 2
    assert 'dataset: cache has mini_shift, this run needs mini_shapes' in capsys.readouterr().err
    assert train_main([*common, 'DATASET.NUM_SHOTS', '2', 'OUTPUT_DIR', str(tmp_path/'c')]) == 2
    assert 'shots: cache has 4, this run needs 2' in capsys.readouterr().err

def test_the_same_new_dataset_merge_twice_changes_nothing(tmp_path, capsys):
    "Merging mini_shapes into the cache a second time replaces its keys (saying so): the keys, the datasets and the accuracy "
    "stay (before: 8 -> 16 -> 24 keys and 96.92% -> 95.58%)."
    from clip_strategies.core import read_safetensors
    cache = str(tmp_path/'cache.safetensors')
    common = [*TIP0, 'DATASET.NUM_SHOTS', '1', 'TRAINER.TIP.CACHE', cache]
    merge = [*common, 'DATASET.NAME', 'mini_shapes', 'TRAINER.TIP.NEW_DATASET', 'true']
    assert train_main([*common, 'OUTPUT_DIR', str(tmp_path/'base')]) == 0
    assert train_main([*merge, 'OUTPUT_DIR', str(tmp_path/'m1')]) == 0
    keys1 = read_safetensors(cache)[0]['keys']
    capsys.readouterr()
    assert train_main([*merge, 'OUTPUT_DIR', str(tmp_path/'m2')]) == 0
    keys2 = read_safetensors(cache)[0]['keys']
    assert len(keys1) == len(keys2) == 2 * 8 and torch.equal(keys1, keys2)
    assert _accuracy(tmp_path/'m2') == _accuracy(tmp_path/'m1')
    assert 'mini_shapes was already in the Tip cache' in capsys.readouterr().out
    from clip_strategies.tip import read_cache
    assert [d['dataset'] for d in read_cache(cache)[1]['datasets']] == ['mini_shift', 'mini_shapes']

# Issue 20: the authors' per-dataset settings (RECIPES.md §1.5, §2.2), Tip-F's epoch among trained epochs only, fresh
# views each epoch as an option, one augmentation only, and the real-CLIP recipe.
from torch.utils.data import Dataset

class _Named(Dataset):
    "A split under another dataset name (what a run on one of the 11 datasets would see), everything else the mini lab's."
    def __init__(self, ds, name): self.dataset, self.name = ds, name
    def __len__(self): return len(self.dataset)
    def __getitem__(self, i): return self.dataset[i]

@pytest.fixture(scope='module')
def mini_lab():
    from clip_strategies.models import load_clip
    from clip_strategies.data import few_shot_splits
    model, prep, tok = load_clip('mini')
    return model, tok, prep, few_shot_splits('mini_shift', num_shots=2, seed=1, train_transform=prep, test_transform=prep)

@pytest.mark.parametrize('name, alpha, beta, scale', [('flowers102', 10., 1., [50., 50.]), ('dtd', 2., 1., [13., 13.]),
                                                      ('EuroSAT', 2., 1., [12., 10.]), ('caltech101', 3., 1., [12., 5.]),
                                                      ('mini_shift', 1., 1., [50., 100.]), ('my_own', 1., 1., [7., 3.])])
def test_tip_takes_the_datasets_alpha_beta_and_search_range(mini_lab, monkeypatch, name, alpha, beta, scale):
    "Options left None take the dataset's init α, β and search range (Tip:configs/<ds>.yaml); the mini lab and a dataset of "
    "yours keep the library's α = β = 1 and range (before: α = β = 1 everywhere, and DTD, Caltech searched ImageNet's [7, 3])."
    import clip_strategies.tip as tip
    from clip_strategies.strategy import get_strategy
    model, tok, _, splits = mini_lab
    seen = []
    monkeypatch.setattr(tip, 'search', lambda adapter, f, l, scale, steps: seen.append((list(scale), list(steps))) or {})
    s = get_strategy('tip', augment_epoch=0)
    s.fit(model, tok, dict(train=_Named(splits['train'], name), val=splits['val']))
    assert (s.adapter.alpha, s.adapter.beta) == (alpha, beta)  # what Tip answers without search, and where Tip-F starts
    assert seen == [(scale, [200, 20])]
    s = get_strategy('tip', augment_epoch=0, alpha=0.5, search_scale=[9., 9.], search_step=[10, 5])  # given: they win
    s.fit(model, tok, dict(train=_Named(splits['train'], name), val=splits['val']))
    assert s.adapter.alpha == 0.5 and seen[-1] == ([9., 9.], [10, 5])

def test_tip_f_keeps_a_trained_epoch_never_the_untrained_start(tmp_path, monkeypatch):
    "With a validation score that every step of training lowers, Tip-F keeps its first trained epoch's keys, not the start's "
    "(before: the untrained start counted and won, and tip_f's keys were tip's)."
    import clip_strategies.tip as tip
    from clip_strategies.strategy import read_learned
    first = {}
    def score(adapter, feats, labels):  # 0 for the first keys it sees, lower the further the keys move from them
        k = first.setdefault('keys', adapter.cache_keys.detach().clone())
        return -float((adapter.cache_keys.detach() - k).norm())
    monkeypatch.setattr(tip, 'val_accuracy', score)
    common = ['--config', 'mini', *QUICK, 'DATASET.ALSO_TEST', '[]']
    assert train_main([*common, 'TRAINER.NAME', 'tip', 'TRAINER.TIP.AUGMENT_EPOCH', '2', 'OUTPUT_DIR', str(tmp_path/'tip')]) == 0
    assert train_main([*common, 'TRAINER.NAME', 'tip_f', 'TRAINER.TIP_F.AUGMENT_EPOCH', '2', 'TRAINER.TIP_F.EPOCHS', '3',
                       'TRAINER.TIP_F.LR', '0.01', 'OUTPUT_DIR', str(tmp_path/'tip_f')]) == 0
    (_, _, f_tip), (_, _, f_tipf) = (read_learned(tmp_path/d/'learned.safetensors', 'mini') for d in ('tip', 'tip_f'))
    assert not torch.equal(f_tip['cache_keys'], f_tipf['cache_keys'])  # the keys were trained
    assert torch.equal(f_tipf['cache_keys'], first['keys'])  # ... and they are the first trained epoch's

class _CountViews:
    "Counts the images `augment_images` (Tip's own crop and flip) is asked to augment."
    def __init__(self, real): self.real, self.images = real, 0
    def __call__(self, x, **kw): self.images += len(x); return self.real(x, **kw)

@pytest.mark.parametrize('transforms, own', [('[random_resized_crop, random_flip, normalize]', 0), ('[normalize]', 2 * 4 * 8)])
def test_tip_cache_augments_once(tmp_path, monkeypatch, transforms, own):
    "A train transform with random steps (INPUT.TRANSFORMS) makes the cache's views alone: Tip adds no crop and flip on top "
    "(before: both, two augmentations in a row); a plain transform gets Tip's (2 passes × 32 images)."
    import clip_strategies.tip as tip
    count = _CountViews(tip.augment_images)
    monkeypatch.setattr(tip, 'augment_images', count)
    assert train_main(['--config', 'mini', *QUICK, 'DATASET.ALSO_TEST', '[]', 'INPUT.TRANSFORMS', transforms, 'TRAINER.NAME', 'tip',
                       'TRAINER.TIP.AUGMENT_EPOCH', '2', 'OUTPUT_DIR', str(tmp_path/'out')]) == 0
    assert count.images == own

def test_tip_cache_views_from_a_random_transform_are_seeded(mini_lab):
    "The dataset transform's views: two passes differ, the same cache twice is the same, and the run's random stream is untouched."
    from clip_strategies.tip import build_cache
    from clip_strategies.data import build_transform, few_shot_splits
    model, _, _, _ = mini_lab
    tf = build_transform(32, transforms=['random_resized_crop', 'random_flip', 'normalize'], rrcrop_scale=(0.5, 1))
    train = few_shot_splits('mini_shift', num_shots=2, seed=1, train_transform=tf)['train']
    torch.manual_seed(0); state = torch.get_rng_state()
    k1, _, p1 = build_cache(model, train, augment_epoch=2)
    assert torch.equal(torch.get_rng_state(), state)
    k2, _, _ = build_cache(model, train, augment_epoch=2)
    assert torch.equal(k1, k2) and not torch.allclose(p1[0], p1[1])

def test_tip_f_fresh_views_each_epoch(tmp_path, monkeypatch):
    "FRESH_VIEWS: every epoch encodes each training image under a new crop and flip (the authors' loop); the cached passes "
    "cycle otherwise. Fresh views also train from a cache file, which keeps no passes (before: the option did not exist)."
    import clip_strategies.tip as tip
    count = _CountViews(tip.augment_images)
    monkeypatch.setattr(tip, 'augment_images', count)
    common = ['--config', 'mini', *QUICK, 'DATASET.ALSO_TEST', '[]', 'TRAINER.NAME', 'tip_f', 'TRAINER.TIP_F.AUGMENT_EPOCH', '2',
              'TRAINER.TIP_F.EPOCHS', '3']
    assert train_main([*common, 'TRAINER.TIP_F.FRESH_VIEWS', 'true', 'OUTPUT_DIR', str(tmp_path/'fresh')]) == 0
    assert count.images == (2 + 3) * 32  # the cache's 2 passes, then one per epoch
    count.images = 0
    assert train_main([*common, 'OUTPUT_DIR', str(tmp_path/'cycled')]) == 0
    assert count.images == 2 * 32
    cache = str(tmp_path/'c.safetensors')
    for out in ('a', 'b'):  # written, then read: fresh views need no passes
        assert train_main([*common, 'TRAINER.TIP_F.FRESH_VIEWS', 'true', 'TRAINER.TIP_F.CACHE', cache, 'OUTPUT_DIR', str(tmp_path/out)]) == 0
    assert _accuracy(tmp_path/'a') == _accuracy(tmp_path/'b')

def test_fresh_views_are_the_same_for_an_epoch_whenever_it_comes(mini_lab):
    "A resumed run sees its epochs' views again: epoch e's views depend on the seed and e only."
    from clip_strategies.tip import FreshViews
    model, _, _, splits = mini_lab
    v = FreshViews(model, splits['train'])
    v.set_epoch(0); e0 = v[torch.arange(len(v))][0].clone()
    v.set_epoch(1); e1 = v[torch.arange(len(v))][0].clone()
    w = FreshViews(model, splits['train']); w.set_epoch(0)
    assert not torch.allclose(e0, e1) and torch.equal(e0, w[torch.arange(len(w))][0])
    assert torch.allclose(e0.norm(dim=-1), torch.ones(len(e0)))

def test_tip_f_eps_reaches_adamw(tmp_path, monkeypatch):
    "TRAINER.TIP_F.EPS is AdamW's eps (the authors' 1e-4 by default; before: fixed, no option)."
    from clip_strategies.callbacks import RunContext
    seen, learner = [], RunContext.learner
    def spy(self, model, dls, objective, lr, epochs, opt_func=None, *a, **k):
        seen.append(opt_func.kwargs.get('eps')); return learner(self, model, dls, objective, lr, epochs, opt_func, *a, **k)
    monkeypatch.setattr(RunContext, 'learner', spy)
    common = ['--config', 'mini', *QUICK, 'DATASET.ALSO_TEST', '[]', 'TRAINER.NAME', 'tip_f', 'TRAINER.TIP_F.AUGMENT_EPOCH', '1',
              'TRAINER.TIP_F.EPOCHS', '1']
    assert train_main([*common, 'OUTPUT_DIR', str(tmp_path/'a')]) == 0
    assert train_main([*common, 'TRAINER.TIP_F.EPS', '1e-6', 'OUTPUT_DIR', str(tmp_path/'b')]) == 0
    assert seen == [1e-4, 1e-6]

@pytest.mark.parametrize('dataset, epochs', [('eurosat', 100), ('EuroSAT', 100), ('caltech101', 20), ('imagenet', 20), ('my_own', 20)])
def test_tip_f_real_recipe_is_the_authors(dataset, epochs):
    "On real CLIP Tip-F runs the authors' recipe (RECIPES.md §1.5, §2.2): AdamW lr 1e-3, eps 1e-4, batch 256, 20 epochs "
    "(EuroSAT 100), 10 augmented passes, fresh views each epoch; the mini lab's recipe stays empty."
    from clip_strategies.tip import Tip, TipF
    assert TipF.recipe_for('ViT-B/16', dataset, 16) == {
        'TRAINER.TIP_F.AUGMENT_EPOCH': 10, 'TRAINER.TIP_F.EPOCHS': epochs, 'TRAINER.TIP_F.LR': 1e-3, 'TRAINER.TIP_F.EPS': 1e-4,
        'TRAINER.TIP_F.BATCH_SIZE': 256, 'TRAINER.TIP_F.FRESH_VIEWS': True}
    assert Tip.recipe_for('ViT-B/16', dataset, 16) == {'TRAINER.TIP.AUGMENT_EPOCH': 10}
    assert TipF.recipe_for('mini', dataset, 16) == Tip.recipe_for('mini', dataset, 16) == {}
    assert (TipF.real_recipe_by, Tip.real_recipe_by) == ('authors', 'authors')
    assert 'RECIPES.md §1.5' in TipF.real_recipe_source and 'Tip:main.py' in TipF.real_recipe_source

def test_tip_f_recipe_keys_build_the_options():
    "The recipe's keys are tip_f's and tip's option keys: a config holding EuroSAT's recipe builds the strategies with those options."
    from clip_strategies.tip import Tip, TipF
    from clip_strategies.config import load_config
    s = load_config(None, {'TRAINER.NAME': 'tip_f', **TipF.recipe_for('ViT-B/16', 'eurosat', 16)}).build_strategy()
    assert (s.epochs, s.lr, s.eps, s.batch_size, s.augment_epoch, s.fresh_views) == (100, 1e-3, 1e-4, 256, 10, True)
    s = load_config(None, {'TRAINER.NAME': 'tip', 'TRAINER.TIP.AUGMENT_EPOCH': 3, **Tip.recipe_for('ViT-B/16', 'eurosat', 16)}).build_strategy()
    assert s.augment_epoch == 10

def test_a_reloaded_tip_f_keeps_its_trained_keys_and_logits(tmp_path):
    "Tip-F's fine-tuned keys are not unit length; loading them back keeps them as saved, so the logits are the trained ones "
    "(before: the loader normalised them again and the logits moved by 0.13 on ViT-B-16)."
    from clip_strategies.models import load_clip
    from clip_strategies.strategy import load_learned, read_learned
    out = tmp_path/'tip_f'
    assert train_main(['--config', 'mini', *QUICK, 'DATASET.ALSO_TEST', '[]', 'TRAINER.NAME', 'tip_f', 'TRAINER.TIP_F.AUGMENT_EPOCH', '2',
                       'TRAINER.TIP_F.EPOCHS', '3', 'TRAINER.TIP_F.LR', '0.05', 'OUTPUT_DIR', str(out)]) == 0
    _, _, fitted = read_learned(out/'learned.safetensors', 'mini')
    saved = fitted['cache_keys']
    assert (saved.norm(dim=-1) - 1).abs().max() > 1e-3  # the trained keys left the unit sphere: the case that went wrong
    loaded = load_learned(load_clip('mini', device='cpu')[0], out/'learned.safetensors', 'mini')
    assert torch.equal(loaded.adapter.cache_keys.detach(), saved)
    feats = torch.nn.functional.normalize(torch.randn(5, saved.shape[1]), dim=-1)
    a = fitted['alpha'] * torch.exp(-fitted['beta'] * (1 - feats @ saved.t())) @ fitted['cache_values']
    torch.testing.assert_close(loaded.adapter(feats), 100 * feats @ fitted['text_weights'].t() + a)
