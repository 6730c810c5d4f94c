"Tip-Adapter from YAML through the command line: a run writes its metrics; retrieval and bad options are refused."
import json
import pytest
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
