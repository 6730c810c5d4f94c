"Shared fixtures."
import signal
import json
import pytest
from clip_strategies.cli import train_main

@pytest.fixture
def train_yaml(tmp_path, capsys):
    "Run `clip_strategies_train --config` on a YAML text into `tmp_path/out`; returns (output folder, metrics)."
    def run(text:str):
        cfg, out = tmp_path/'config_in.yaml', tmp_path/'out'
        cfg.write_text(text)
        assert train_main(['--config', str(cfg), '--no-progress', 'OUTPUT_DIR', str(out)]) == 0, capsys.readouterr().err
        return out, json.loads((out/'metrics.json').read_text())
    return run

def bare_run(tmp_path_factory, name:str)->tuple:
    "Train strategy `name` from a bare mini config (its mini-lab recipe fills the rest); returns (output folder, metrics)."
    out = tmp_path_factory.mktemp(name)/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'DATASET.ALSO_TEST', '[]', 'TRAINER.NAME', name, 'OUTPUT_DIR', str(out)]) == 0
    return out, json.loads((out/'metrics.json').read_text())

SLOW_COMMAND = "pytest -q --slow tests/test_real_arch.py (or CLIP_STRATEGIES_SLOW=1 pytest -q tests)"

def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', default=False, help="also run the tests marked slow (the real-architecture tier)")

def pytest_configure(config):
    config.addinivalue_line('markers', "slow: long tests (every strategy on ViT-B-32, ViT-B-16 and RN50), skipped unless --slow or CLIP_STRATEGIES_SLOW=1")

def slow_enabled(config)->bool:
    "Whether the slow tier runs: `--slow` on the command line or `CLIP_STRATEGIES_SLOW=1` in the environment."
    import os
    return config.getoption('--slow') or os.environ.get('CLIP_STRATEGIES_SLOW', '').lower() in ('1', 'true', 'yes', 'on')

def pytest_collection_modifyitems(config, items):
    if slow_enabled(config): return
    skip = pytest.mark.skip(reason=f"slow: run it with {SLOW_COMMAND}")
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)

def terminal_ctrl_c():
    "In the child: Ctrl-C as in a terminal (a shell's background job, CI's maybe, starts with SIGINT ignored)."
    signal.signal(signal.SIGINT, signal.SIG_DFL)

@pytest.fixture(scope='module')
def one_thread():
    "One torch thread for a module's tests (as their timings were measured), restored for the modules after it."
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
