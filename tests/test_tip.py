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
    assert meta['datasets'] == '2' and len(t['keys']) == 2 * 4 * 8

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
    with pytest.raises(KeyboardInterrupt): train_main([*args, 'OUTPUT_DIR', str(cut)])
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
