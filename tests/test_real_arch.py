"""Every strategy on open_clip's real architectures (random weights, the real input size): apply, two optimiser steps with
the authors' recipe, evaluate, save the learned part, load it on a fresh model, same logits; refusals before any data.

The default run covers a few strategies on ViT-B-32 (the 2-core machine cannot fit every one in the suite's budget);
`pytest -q --slow tests/test_real_arch.py` (or `CLIP_STRATEGIES_SLOW=1`) runs every strategy and the documented
combinations on ViT-B-32, ViT-B-16 and RN50."""
import json, sys
from pathlib import Path

import pytest

from clip_strategies import cli
from clip_strategies.config import load_config
from clip_strategies.models import load_clip, real_clip_unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tools'))
from gpu_check import fake_tree, patch_cli, check_strategy, every_strategy, spec_of  # the same harness the GPU check runs

ARCHS = ['ViT-B-32', 'ViT-B-16', 'RN50']
EVERY = every_strategy()  # every registered strategy and the documented combinations (`strategy.COMBINATION_RECIPES`)
NEEDS_BLOCKS = {'vpt', 'prefix', 'lora+prefix', 'vpt+clip_adapter', 'maple', 'promptsrc',  # need transformer blocks in the image tower:
                'adapter', 'lora', 'lora+coop', 'last_n'}  # refused on a ResNet (adapter, LoRA, last_n with their default towers='both')
DEFAULT = ['coop', 'lora', 'tip']  # the default run: one of each kind (prompt, added weights, fitted cache) on ViT-B-32
TIMES = {}  # (arch, strategy) -> seconds, printed at the end of the module

def refused(arch:str, name:str)->bool: return arch == 'RN50' and name in NEEDS_BLOCKS

@pytest.fixture(scope='module')
def tree(tmp_path_factory)->Path:
    "A tiny image folder: 2 classes, 2 train images and 1 test image each (K=1: 1 train + 1 val per class)."
    return fake_tree(tmp_path_factory.mktemp('real_arch')/'tree')

@pytest.fixture
def fresh_models(monkeypatch):
    "The command line's `load_clip` returns a deep copy of a model built once per process; no checkpoints (600 MB each)."
    patch_cli(cli, 'cpu', monkeypatch.setattr)

def run_one(arch:str, name:str, tree:Path, tmp_path:Path):
    "Apply, two steps, evaluate, save, load on a fresh model: the same logits; record the time."
    TIMES[(arch, name)] = check_strategy(arch, name, tree, tmp_path)['seconds']

def check_refusal(arch:str, name:str, tmp_path:Path, capsys):
    "The command line refuses the strategy on `arch` before reading the dataset (its root does not exist)."
    argv = ['--no-progress', 'TRAINER.NAME', json.dumps(spec_of(name)), 'MODEL.BACKBONE.NAME', arch, 'MODEL.BACKBONE.PRETRAINED', '""',
            'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', str(tmp_path/'no_such_folder'), 'OUTPUT_DIR', str(tmp_path/'out')]
    assert cli.train_main(argv) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and 'no_such_folder' not in err, err  # refused before the dataset is read
    assert 'ModifiedResNet' in err, err  # names the tower it cannot adapt

@pytest.mark.parametrize('name', DEFAULT)
def test_default_tier_on_vit_b32(name, tree, tmp_path, fresh_models):
    run_one('ViT-B-32', name, tree, tmp_path)

@pytest.mark.parametrize('name', sorted(NEEDS_BLOCKS))
def test_block_strategies_refuse_a_resnet_before_the_data(name, tmp_path, capsys, fresh_models):
    check_refusal('RN50', name, tmp_path, capsys)

@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('name', EVERY)
def test_every_strategy_on_real_architectures(arch, name, tree, tmp_path, capsys, fresh_models):
    if refused(arch, name): check_refusal(arch, name, tmp_path, capsys)
    else: run_one(arch, name, tree, tmp_path)

def test_empty_pretrained_is_random_weights_offline(monkeypatch):
    "`load_clip(name, '')` and `MODEL.BACKBONE.PRETRAINED ''` build the architecture with random weights, no download."
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model = load_clip('RN50', '', device='cpu')[0]
    assert type(model.visual).__name__ == 'ModifiedResNet'
    assert load_config(None, {'MODEL.BACKBONE.PRETRAINED': ''})['MODEL.BACKBONE.PRETRAINED'] in ('', None)
    assert real_clip_unavailable('ViT-B-16', '', need_gpu=False) is None  # nothing to fetch

@pytest.fixture(scope='module', autouse=True)
def report_times():
    yield
    if TIMES: print('\nreal-architecture timings (s):', json.dumps({f'{a} {n}': s for (a, n), s in TIMES.items()}))

def test_offline_pretrained_request_fails_fast(monkeypatch, tmp_path, capsys):
    "Offline, a pretrained tag whose weights are not cached is refused at once, naming the model, the tag and the ways out."
    from clip_strategies.models import cached_weights
    if cached_weights('RN50', 'yfcc15m'): pytest.skip("RN50/yfcc15m weights are cached here")
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    t0 = __import__('time').time()
    assert cli.train_main(['MODEL.BACKBONE.NAME', 'RN50', 'MODEL.BACKBONE.PRETRAINED', 'yfcc15m', 'OUTPUT_DIR', str(tmp_path/'out')]) == 1
    err = capsys.readouterr().err
    assert __import__('time').time() - t0 < 10 and "'RN50'" in err and "'yfcc15m'" in err and 'offline' in err, err
