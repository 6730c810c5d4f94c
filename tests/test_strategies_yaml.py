"Every registered strategy runs from YAML through the CLI's code path, with its options, and trains what it says."
import pytest
import torch
from clip_strategies.config import load_config
from clip_strategies.cli import run, train_main
from clip_strategies.models import load_clip
from clip_strategies.core import count_params
from clip_strategies.strategy import Strategy, get_strategy, list_strategies, load_learned, added_parameters

QUICK = {'DATASET.NUM_SHOTS': 2, 'DATALOADER.TRAIN_X.BATCH_SIZE': 8, 'OPTIM.MAX_EPOCH': 1}
OPTIONS = {  # config keys that also exercise some options; every registered strategy runs, listed here or not
    'zeroshot': {}, 'full': {}, 'frozen_vision': {'TRAINER.FROZEN_VISION.VISUAL_PROJ': True},
    'frozen_text': {'TRAINER.FROZEN_TEXT.TEXT_PROJ': True}, 'projection': {'TRAINER.PROJECTION.LOGIT_SCALE': False},
    'last_n': {'TRAINER.LAST_N.N': 1, 'TRAINER.LAST_N.TOWERS': 'vision'},
    'bitfit': {'BIAS.BIAS_TERMS': ['q_proj', 'layer_norm'], 'BIAS.BIAS_TERMS_EXCLUDE': ['ln_final']},
    'logit_scale': {}, 'differential_lr': {'TRAINER.DIFFERENTIAL_LR.BASE': 'last_n', 'TRAINER.DIFFERENTIAL_LR.BASE_OPTIONS': {'n': 1}},
    'abs': {'OPTIM.MAX_EPOCH': 2, 'MODEL.ABS_KEEP': 1},
    'coop': {'TRAINER.COOP.N_CTX': 4}, 'cocoop': {}, 'kgcoop': {'TRAINER.KGCOOP.W': 2.0},
    'vpt': {'TRAINER.VPT.DEEP': True}, 'prefix': {'TRAINER.PREFIX.LENGTH': 2}, 'maple': {'TRAINER.MAPLE.N_CTX': 3},
    'adapter': {'TRAINER.ADAPTER.REDUCTION': 8}, 'lora': {'TRAINER.LORA.RANK': 1}, 'clip_adapter': {'TRAINER.CLIP_ADAPTER.SIDE': 'both'},
    'tip': {'TRAINER.TIP.AUGMENT_EPOCH': 2}, 'tip_f': {'TRAINER.TIP_F.AUGMENT_EPOCH': 2},
    'linear_probe': {}, 'zs_linear': {}, 'gda': {}, 'lp_ft': {'TRAINER.LP_FT.STEPS': 2},
    'promptsrc': {'TRAINER.PROMPTSRC.N_CTX_VISION': 2, 'TRAINER.PROMPTSRC.GPA_STD': 2.0},
}

def fits_something(s)->bool:
    "Whether a strategy (or the base a composing strategy runs) has a `fitted_state` of its own: a cache, a head."
    base = getattr(s, 'base_strategy', None)
    return fits_something(base) if base is not None else type(s).fitted_state is not Strategy.fitted_state

def test_the_options_name_only_registered_strategies():
    assert set(OPTIONS) <= set(list_strategies()), set(OPTIONS) - set(list_strategies())

HEAD_AT_FIT = {'lp_ft': 8 * 64 + 8}  # parameters a strategy adds to the model when the fit starts (LP-FT's head, mini lab)

@pytest.mark.parametrize('name', list_strategies())
def test_strategy_runs_from_yaml(tmp_path, name):
    over = {**QUICK, 'TRAINER.NAME': name, 'OUTPUT_DIR': str(tmp_path/name), **OPTIONS.get(name, {})}
    cfg = load_config(None, over)
    m = run(cfg, progress=False, log=lambda *_: None)
    assert m['strategy'] == name and 0 <= m['accuracy'] <= 100
    model, _, _ = load_clip('mini', device='cpu')
    expected = count_params(cfg.build_strategy().apply(model))[0] + HEAD_AT_FIT.get(name, 0)  # what trains, a head included
    assert (tmp_path/name/'model.safetensors').is_file()
    fits_outside = fits_something(cfg.build_strategy())  # a cache or a head: kept in the same file
    assert (tmp_path/name/'learned.safetensors').is_file() == (bool(added_parameters(model)) or fits_outside)
    assert m['trainable_params'] == expected

def test_abs_switch_on_full_from_yaml(train_yaml):
    _, m = train_yaml("TRAINER:\n  NAME: full\nMODEL:\n  ABS: true\n  ABS_KEEP: 1\n  ABS_GROUP_NAME: [q_proj, k_proj, v_proj]\n"
                      "OPTIM:\n  WARMUP_EPOCH: 1\n  MAX_EPOCH: 2\nDATASET:\n  NUM_SHOTS: 2\n")
    assert m['strategy'] == 'abs'

def test_bad_strategy_option_from_yaml_is_named(tmp_path, capsys):
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.TOWERS', 'visoin', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'visoin' in capsys.readouterr().err
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.M', '2', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'TRAINER.LAST_N.N' in capsys.readouterr().err
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.N', '0', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'Config key TRAINER.LAST_N.N = 0' in capsys.readouterr().err
    assert not (tmp_path/'o').exists()

def test_abs_from_a_bare_config_says_which_warmup_it_uses(tmp_path, capsys):
    args = ['--no-progress', 'TRAINER.NAME', 'abs', 'OPTIM.MAX_EPOCH', '2', 'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[]']
    assert train_main([*args, 'OUTPUT_DIR', str(tmp_path/'ok')]) == 0
    out = capsys.readouterr().out
    assert "abs's recipe (mini lab) sets" in out and 'OPTIM.WARMUP_EPOCH=1' in out, out
    assert out.count('note:') == 1
    assert train_main([*args, 'OPTIM.WARMUP_EPOCH', '0', 'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    err = capsys.readouterr().err
    assert 'Config key OPTIM.WARMUP_EPOCH = 0' in err and 'an integer >= 1' in err, err
    assert not (tmp_path/'bad').exists()

def test_trainable_params_count_only_the_elements_that_train(tmp_path):
    "BitFit on q_proj trains a third of each packed bias: metrics.json counts that third, not the whole tensor."
    cfg = load_config(None, {**QUICK, 'TRAINER.NAME': 'bitfit', 'BIAS.BIAS_TERMS': ['q_proj'], 'DATASET.ALSO_TEST': [],
                             'OUTPUT_DIR': str(tmp_path/'q')})
    m = run(cfg, progress=False, log=lambda *_: None)
    model, _, _ = load_clip('mini', device='cpu')
    packed = [p for n, p in model.named_parameters() if n.endswith('in_proj_bias')]
    assert m['trainable_params'] == sum(p.numel() // 3 for p in packed)

def test_print_freq_sets_how_often_the_terminal_logs(tmp_path, capsys):
    args = ['--no-progress', 'OPTIM.MAX_EPOCH', '1', 'DATASET.NUM_SHOTS', '4', 'DATALOADER.TRAIN_X.BATCH_SIZE', '4', 'DATASET.ALSO_TEST', '[]']
    assert train_main([*args, 'TRAIN.PRINT_FREQ', '2', 'OUTPUT_DIR', str(tmp_path/'a')]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith('epoch [1/1] batch')]
    assert [l.split(']')[1] for l in lines] == [' batch [2/8', ' batch [4/8', ' batch [6/8', ' batch [8/8'], lines
    assert train_main([*args, 'TRAIN.PRINT_FREQ', '0', 'OUTPUT_DIR', str(tmp_path/'b')]) == 0
    assert 'batch [' not in capsys.readouterr().out

def _learned_outputs(model, tokens, images):
    with torch.no_grad(): return torch.cat([model.encode_image(images), model.encode_text(tokens)])

def test_combination_from_yaml_trains_each_part_and_saves_the_learned_part(train_yaml):
    out, m = train_yaml("TRAINER:\n  NAME: [lora, coop]\n  COOP:\n    N_CTX: 4\nOPTIM:\n  MAX_EPOCH: 1\nDATASET:\n  NUM_SHOTS: 2\n  ALSO_TEST: []\n")
    assert m['strategy'] == 'lora+coop' and [p['name'] for p in m['spec']] == ['lora', 'coop']
    strategy = get_strategy(['lora', {'name': 'coop', 'n_ctx': 4}])
    model = strategy.apply(load_clip('mini', device='cpu')[0])
    names = strategy.learned_names(model)
    assert 'token_embedding.ctx' in names and any('lora' in n for n in names)
    assert m['trainable_params'] == count_params(model)[0]
    tokens, images = model.tokenizer(['a photo of a circle.']), torch.randn(2, 3, 32, 32)
    before = _learned_outputs(model, tokens, images)
    load_learned(model, out/'learned.safetensors', 'mini')
    assert not torch.allclose(before, _learned_outputs(model, tokens, images))  # the trained additions arrived

def test_overlapping_combination_is_refused_before_anything_runs(tmp_path, capsys):
    args = ['--config', 'mini', 'TRAINER.NAME', '[full, bitfit]', 'OUTPUT_DIR', str(tmp_path/'o')]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert 'full' in err and 'bitfit' in err, err
    assert not (tmp_path/'o').exists()

@pytest.mark.parametrize('name,key,value', [('coop', 'OPTIM.NAME', 'sgd'), ('lora', 'OPTIM.NAME', 'adamw'), ('bitfit', 'OPTIM.LR', 1e-2)])
def test_recipe_fills_unset_keys_and_is_recorded(name, key, value):
    cfg = load_config(None, {'TRAINER.NAME': name})
    assert cfg[key] == value and key in cfg.from_recipe
    assert any('recipe' in n for n in cfg.strategy_spec()['notes'])
    mine = load_config(None, {'TRAINER.NAME': name, 'OPTIM.LR': 0.123})
    assert mine['OPTIM.LR'] == 0.123 and 'OPTIM.LR' not in mine.from_recipe

def test_recipe_is_written_to_the_runs_config(tmp_path):
    over = {'TRAINER.NAME': 'coop', 'TRAINER.COOP.N_CTX': 4, 'DATASET.NUM_SHOTS': 1, 'OPTIM.MAX_EPOCH': 1,
            'DATASET.ALSO_TEST': [], 'OUTPUT_DIR': str(tmp_path/'c')}
    run(load_config(None, over), progress=False, log=lambda *_: None)
    written = load_config(tmp_path/'c'/'config.yaml', {'OUTPUT_DIR': str(tmp_path/'c2')})
    assert written['OPTIM.NAME'] == 'sgd' and written['OPTIM.LR'] == get_strategy('coop').recipe['OPTIM.LR']

@pytest.mark.parametrize('name', ['coop', 'cocoop', 'kgcoop'])
def test_retrieval_is_refused_for_classification_only_strategies(tmp_path, capsys, name):
    args = ['--config', 'mini', 'TRAINER.NAME', name, 'DATASET.NAME', 'mini_captions', 'DATASET.ALSO_TEST', '[]',
            'OUTPUT_DIR', str(tmp_path/'o')]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert repr(name) in err and 'classification' in err and 'retrieval' in err, err

def test_fit_hook_sees_train_and_val_but_never_test(tmp_path):
    from clip_strategies.strategy import Strategy, register_strategy, _REGISTRY
    seen = {}
    @register_strategy('fit_probe')
    class FitProbe(Strategy):
        "Records what `fit` receives."
        trains = False
        def apply(self, model): return model
        def fit(self, model, tokenizer, splits, batch_size=256, run=None): seen.update(splits)
    try:
        over = {'TRAINER.NAME': 'fit_probe', 'DATASET.NUM_SHOTS': 2, 'DATASET.ALSO_TEST': [], 'OUTPUT_DIR': str(tmp_path/'f')}
        run(load_config(None, over), progress=False, log=lambda *_: None)
    finally: _REGISTRY.pop('fit_probe')
    assert 'train' in seen and 'val' in seen and 'test' not in seen
