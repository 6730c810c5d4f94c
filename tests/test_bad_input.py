"Issue 19: bad input and interruptions on the train command are refused clearly, and lose nothing."
import json, os, signal, subprocess, sys, time
from conftest import terminal_ctrl_c
from pathlib import Path
import pytest
import clip_strategies.cli as cli
from clip_strategies.cli import train_main

QUICK = ['--config', 'mini', '--no-progress', 'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[]', 'TRAIN.PRINT_FREQ', '0']


def refused(capsys, args:list, *words)->str:
    "Run the train command, check it exits 2 naming `words`, return its error."
    assert train_main(args) == 2
    err = capsys.readouterr().err
    for w in words: assert w in err, err
    return err

@pytest.mark.parametrize('shots', ['0', '-2'])
def test_num_shots_zero_or_negative_is_refused(tmp_path, capsys, shots):  # item 3
    refused(capsys, ['--config', 'mini', 'DATASET.NUM_SHOTS', shots, 'OUTPUT_DIR', str(tmp_path/'o')],
            f'DATASET.NUM_SHOTS = {shots}', 'at least 1 or -1')
    assert not (tmp_path/'o').exists()

def test_negative_lr_is_refused_with_its_key(tmp_path, capsys):  # item 17
    refused(capsys, ['--config', 'mini', 'OPTIM.LR', '-0.1', 'OUTPUT_DIR', str(tmp_path/'o')], 'OPTIM.LR = -0.1', 'at least 0')

def test_duplicate_yaml_key_is_refused_with_its_lines(tmp_path, capsys):  # item 7
    cfg = tmp_path/'twice.yaml'
    cfg.write_text("TRAINER:\n  NAME: bitfit\n  NAME: full\nOUTPUT_DIR: " + str(tmp_path/'o') + "\n")
    refused(capsys, ['--config', str(cfg)], "key 'NAME' is given twice (lines 2 and 3)", 'twice.yaml')
    assert not (tmp_path/'o').exists()

def test_duplicate_override_is_refused(tmp_path, capsys):  # item 7, on the command line
    refused(capsys, ['--config', 'mini', 'SEED', '1', 'SEED', '2', 'OUTPUT_DIR', str(tmp_path/'o')], 'SEED is given 2 times')

def test_combination_with_differing_recipes_names_the_keys(tmp_path, capsys):  # item 9
    err = refused(capsys, ['--config', 'mini', 'TRAINER.NAME', '[vpt, prefix]', 'OUTPUT_DIR', str(tmp_path/'o')],
                  "OPTIM.NAME (vpt: 'sgd', prefix: 'adamw')", "OPTIM.LR (vpt: 1.0, prefix: 0.001)")
    assert not (tmp_path/'o').exists()

def test_combination_trains_once_its_differing_keys_are_set(tmp_path, capsys):  # item 9: the way out works
    args = QUICK + ['TRAINER.NAME', '[vpt, prefix]', 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(tmp_path/'o'),
                    'OPTIM.NAME', 'adamw', 'OPTIM.LR', '1e-3', 'OPTIM.WEIGHT_DECAY', '0.01', 'OPTIM.WARMUP_TYPE', 'linear']
    assert train_main(args) == 0, capsys.readouterr().err
    import yaml
    ran = yaml.safe_load((tmp_path/'o'/'config.yaml').read_text())['OPTIM']
    assert (ran['NAME'], ran['LR'], ran['MOMENTUM']) == ('adamw', 1e-3, 0.9)  # set, set, agreed (VPT's; prefix sets none)

def test_options_anywhere_among_overrides(tmp_path, capsys):  # item 17
    args = ['--config', 'mini', 'TRAINER.NAME', 'zeroshot', 'DATASET.NUM_SHOTS', '2', '--no-progress', 'DATASET.ALSO_TEST', '[]',
            'OUTPUT_DIR', str(tmp_path/'o')]
    assert train_main(args) == 0, capsys.readouterr().err
    assert json.loads((tmp_path/'o'/'metrics.json').read_text())['num_shots'] == 2

def test_resnet_refused_before_data_is_read(tmp_path, capsys, monkeypatch):  # item 16
    def no_data(*a, **k): raise AssertionError('the test split was read before the backbone was refused')
    monkeypatch.setattr(cli, 'full_test_split', no_data)
    for name in ('vpt', 'prefix'):
        refused(capsys, ['--config', 'mini', 'MODEL.BACKBONE.NAME', 'RN50', 'TRAINER.NAME', name, 'OUTPUT_DIR', str(tmp_path/name)],
                'ResNet' if name == 'vpt' else 'ModifiedResNet')

def _two_epochs(out:Path)->list: return QUICK + ['TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out)]

def test_corrupt_checkpoint_names_the_file_and_the_way_out(tmp_path, capsys):  # item 14
    out = tmp_path/'o'
    assert train_main(_two_epochs(out)) == 0
    (out/'metrics.json').unlink()  # as if interrupted after its last epoch's checkpoint
    model = next((out/'checkpoints').glob('model-e*.safetensors'))
    model.write_bytes(model.read_bytes()[:100])
    refused(capsys, _two_epochs(out) + ['--resume'], model.name, '--restart')
    assert train_main(_two_epochs(out) + ['--restart']) == 0, capsys.readouterr().err
    assert 'deleted checkpoints' in capsys.readouterr().out
    assert (out/'metrics.json').exists()
    refused(capsys, _two_epochs(out) + ['--resume', '--restart'], 'exclude each other')

def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):  # item 12
    out = tmp_path/'o'
    args = QUICK + ['TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '400', 'OUTPUT_DIR', str(out)]
    p = subprocess.Popen([sys.executable, '-m', 'clip_strategies.cli', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_ctrl_c)
    deadline = time.time() + 120
    while not list((out/'checkpoints').glob('last.json')) and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
    assert 'interrupted: the checkpoint after epoch' in err and '--resume' in err, err
    again = err.split('continue with: clip_strategies_train ')[1].split()
    assert again[-1] == '--resume' and 'OPTIM.MAX_EPOCH' in again

def test_a_second_run_into_an_output_dir_in_use_is_refused(tmp_path, capsys):  # item 11, the train command
    out = tmp_path/'o'
    args = QUICK + ['TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '400', 'OUTPUT_DIR', str(out)]
    p = subprocess.Popen([sys.executable, '-m', 'clip_strategies.cli', *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list((out/'checkpoints').glob('last.json')) and time.time() < deadline and p.poll() is None: time.sleep(0.2)
        err = refused(capsys, args + ['--resume'], f'is in use by process {p.pid}', '.lock')
        assert p.poll() is None, 'the first run was disturbed'
    finally: p.kill(); p.wait()
    assert train_main(args[:-4] + ['OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out), '--resume']) == 0, capsys.readouterr().err  # a dead holder's lock is taken over
    assert 'took over the lock' in capsys.readouterr().out
