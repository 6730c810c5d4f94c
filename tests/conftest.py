"Shared fixtures."
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
