"""Head-only strategies (linear_probe, zs_linear, gda) through the command line and YAML: options, no test leakage,
retrieval refused, zs_linear with 0 steps is zero-shot."""
import json

import pytest
import torch

from clip_strategies.cli import protocol_run, train_main

pytestmark = pytest.mark.usefixtures('one_thread')  # one torch thread for this module's tests (conftest), restored after

def test_zs_linear_with_no_steps_is_zero_shot():
    m = protocol_run('zs_linear', {'TRAINER.ZS_LINEAR.STEPS': 0, 'DATASET.ALSO_TEST': []})['metrics']
    assert m['accuracy'] == pytest.approx(m['before']['accuracy'], abs=1e-6)
    assert m['nll'] == pytest.approx(m['before']['nll'], abs=1e-4)

@pytest.mark.parametrize('name', ['linear_probe', 'gda'])
def test_from_the_command_line(tmp_path, capsys, name):
    out = tmp_path/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', name, 'OUTPUT_DIR', str(out),
                       'DATASET.ALSO_TEST', '[]']) == 0, capsys.readouterr().err
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == name and m['trainable_params'] == 0 and m['accuracy'] > m['before']['accuracy']

def test_bad_option_and_retrieval_are_refused(tmp_path, capsys):
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'gda', 'TRAINER.GDA.SHRINKAGE', '-1',
                       'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    assert 'shrinkage' in capsys.readouterr().err.lower()
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'linear_probe', 'DATASET.NAME', 'mini_captions',
                       'DATASET.ALSO_TEST', '[]', 'OUTPUT_DIR', str(tmp_path/'retr')]) != 0
    assert 'classification' in capsys.readouterr().err

def test_one_shot_gda_on_the_digits_differs_from_zero_shot(tmp_path, capsys):
    "One image per class: GDA's augmented passes give it a covariance, so it is no longer the zero-shot head (issue 20)."
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tools'))
    from make_digits import make_digits
    data, out = make_digits(tmp_path/'digits'), tmp_path/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'gda', 'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', str(data),
                       'DATASET.NUM_SHOTS', '1', 'DATASET.ALSO_TEST', '[]', 'OUTPUT_DIR', str(out)]) == 0, capsys.readouterr().err
    m = json.loads((out/'metrics.json').read_text())
    assert m['num_shots'] == 1 and m['nll'] != pytest.approx(m['before']['nll'], abs=1e-3), m
    assert m['accuracy'] > m['before']['accuracy'] + 5, (m['before']['accuracy'], m['accuracy'])

def test_lpclip_search_from_the_command_line(tmp_path, capsys):
    "linear_probe's search='lpclip' (its real-CLIP recipe) runs through the command line; an unknown search is refused."
    out = tmp_path/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'linear_probe', 'TRAINER.LINEAR_PROBE.SEARCH', 'lpclip',
                       'TRAINER.LINEAR_PROBE.STEPS', '2', 'OUTPUT_DIR', str(out), 'DATASET.ALSO_TEST', '[]']) == 0, capsys.readouterr().err
    m = json.loads((out/'metrics.json').read_text())
    assert m['spec']['search'] == 'lpclip' and m['accuracy'] > m['before']['accuracy']
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'linear_probe', 'TRAINER.LINEAR_PROBE.SEARCH', 'best',
                       'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    assert 'search' in capsys.readouterr().err
