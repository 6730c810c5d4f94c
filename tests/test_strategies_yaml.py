"Every registered strategy runs from YAML through the CLI's code path, with its options, and trains what it says."
import json
import pytest
import torch
from clip_strategies.config import load_config
from clip_strategies.cli import run, train_main
from clip_strategies.models import load_clip
from clip_strategies.core import count_params
from clip_strategies.strategy import get_strategy, list_strategies

QUICK = {'DATASET.NUM_SHOTS': 2, 'DATALOADER.TRAIN_X.BATCH_SIZE': 8, 'OPTIM.MAX_EPOCH': 1}
CASES = {
    'zeroshot': {}, 'full': {}, 'frozen_vision': {'TRAINER.FROZEN_VISION.VISUAL_PROJ': True},
    'frozen_text': {'TRAINER.FROZEN_TEXT.TEXT_PROJ': True}, 'projection': {'TRAINER.PROJECTION.LOGIT_SCALE': False},
    'last_n': {'TRAINER.LAST_N.N': 1, 'TRAINER.LAST_N.TOWERS': 'vision'},
    'bitfit': {'BIAS.BIAS_TERMS': ['q_proj', 'layer_norm'], 'BIAS.BIAS_TERMS_EXCLUDE': ['ln_final']},
    'logit_scale': {}, 'differential_lr': {'TRAINER.DIFFERENTIAL_LR.BASE': 'last_n', 'TRAINER.DIFFERENTIAL_LR.BASE_OPTIONS': {'n': 1}},
    'abs': {'OPTIM.MAX_EPOCH': 2, 'MODEL.ABS_KEEP': 1},
}

def test_every_registered_strategy_is_covered():
    assert sorted(CASES) == list_strategies()

@pytest.mark.parametrize('name', sorted(CASES))
def test_strategy_runs_from_yaml(tmp_path, name):
    over = {**QUICK, 'TRAINER.NAME': name, 'OUTPUT_DIR': str(tmp_path/name), **CASES[name]}
    cfg = load_config(None, over)
    m = run(cfg, progress=False, log=lambda *_: None)
    assert m['strategy'] == name and 0 <= m['accuracy'] <= 100
    model, _, _ = load_clip('mini', device='cpu')
    expected = count_params(cfg.build_strategy().apply(model))[0]
    assert m['trainable_params'] == expected
    assert (tmp_path/name/'model.safetensors').is_file()

def test_abs_switch_on_full_from_yaml(tmp_path):
    cfg_file = tmp_path/'abs.yaml'
    cfg_file.write_text("TRAINER:\n  NAME: full\nMODEL:\n  ABS: true\n  ABS_KEEP: 1\n  ABS_GROUP_NAME: [q_proj, k_proj, v_proj]\n"
                        "OPTIM:\n  WARMUP_EPOCH: 1\n  MAX_EPOCH: 2\nDATASET:\n  NUM_SHOTS: 2\n")
    assert train_main(['--config', str(cfg_file), '--no-progress', 'OUTPUT_DIR', str(tmp_path/'out')]) == 0
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert m['strategy'] == 'abs'

def test_bad_strategy_option_from_yaml_is_named(tmp_path, capsys):
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.TOWERS', 'visoin', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'visoin' in capsys.readouterr().err
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.M', '2', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'TRAINER.LAST_N.N' in capsys.readouterr().err
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'last_n', 'TRAINER.LAST_N.N', '0', 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'Config key TRAINER.LAST_N.N = 0' in capsys.readouterr().err
    assert not (tmp_path/'o').exists()
