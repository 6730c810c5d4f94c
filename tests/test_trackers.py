"""Experiment tracking (TRAIN.LOG_WITH): what a mini-lab run logs to TensorBoard and the csv tracker equals what its
Recorder kept, with the config and recipe card as hyper-parameters; a comparison logs each cell under the cell's name;
an unknown tracker and a missing package are refused before anything runs."""
import json, sys
from pathlib import Path

import pytest

from clip_strategies import cli
from clip_strategies.callbacks import Trackers, read_tensorboard, read_csv_log, _OPEN
from clip_strategies.compare import compare_main
from clip_strategies.config import resolved

QUICK = {'DATASET.NUM_SHOTS': 4, 'DATALOADER.TRAIN_X.BATCH_SIZE': 8, 'DATASET.ALSO_TEST': []}

def by_step(series): return dict(series)

@pytest.fixture(scope='module')
def logged(tmp_path_factory):
    "A two-epoch full fine-tune on the mini lab that logs to TensorBoard and csv: (train's result, its output folder)."
    out = tmp_path_factory.mktemp('tracked')/'run'
    res = cli.protocol_run('full', {**QUICK, 'OPTIM.MAX_EPOCH': 2, 'TRAIN.LOG_WITH': ['tensorboard', 'csv']}, output_dir=out)
    return res, out

def test_tensorboard_scalars_are_the_recorders_history(logged):
    res, out = logged
    learn, m = res['learner'], res['metrics']
    tb = read_tensorboard(out/'logs'/'tensorboard')['scalars']
    epochs, batches = [r for r in learn.history if 'train_loss' in r], [r for r in learn.history if 'batch' in r]
    assert len(epochs) == 2 and len(batches) == learn.train_step
    for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc', 'valid_top1', 'valid_top5', 'lr', 'time'):
        assert [s for s, _ in tb[f'epoch/{key}']] == [r['step'] for r in epochs], key
        assert [v for _, v in tb[f'epoch/{key}']] == pytest.approx([r[key] for r in epochs], rel=1e-6), key  # float32
    assert [s for s, _ in tb['step/loss']] == [r['step'] for r in batches] == list(range(1, learn.train_step + 1))
    assert [v for _, v in tb['step/loss']] == pytest.approx([r['loss'] for r in batches], rel=1e-6)
    assert [v for _, v in tb['step/lr']] == pytest.approx([r['lr'] for r in batches], rel=1e-6)
    assert tb['result/accuracy'] == [(learn.train_step, pytest.approx(m['accuracy'], rel=1e-6))]
    assert by_step(tb['result/before/accuracy'])[learn.train_step] == pytest.approx(m['before']['accuracy'], rel=1e-6)

def test_tensorboard_holds_the_config_and_the_recipe_card(logged):
    res, out = logged
    hp, m = read_tensorboard(out/'logs'/'tensorboard')['hparams'], res['metrics']
    cfg = cli.load_config(cli.resolve_config('mini'), {'TRAINER.NAME': 'full', 'OUTPUT_DIR': str(out), 'TRAIN.PRINT_FREQ': 0,
                                                       **QUICK, 'OPTIM.MAX_EPOCH': 2, 'TRAIN.LOG_WITH': ['tensorboard', 'csv']})
    assert set(resolved(cfg)) <= set(hp)
    assert hp['OPTIM.LR'] == cfg['OPTIM.LR'] and hp['TRAINER.NAME'] == 'full' and hp['OPTIM.MAX_EPOCH'] == 2
    assert hp['TRAIN.LOG_WITH'] == '["tensorboard", "csv"]' and hp['DATASET.ALSO_TEST'] == '[]'  # lists as JSON text
    assert hp['MODEL.BACKBONE.PRETRAINED'] == 'null' and hp['run_name'] == 'full/4shot_seed1'
    card = m['card']
    assert hp['card.recipe'] == card['recipe'] and hp['card.steps_run'] == card['steps_run']
    assert hp['card.split_checksums.train'] == card['split_checksums']['train'] and json.loads(hp['card.templates']) == card['templates']

def test_the_csv_holds_every_digit(logged):
    res, out = logged
    learn, m = res['learner'], res['metrics']
    cv = read_csv_log(out/'logs'/'csv')
    epochs, batches = [r for r in learn.history if 'train_loss' in r], [r for r in learn.history if 'batch' in r]
    for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc', 'valid_ece', 'lr'):
        assert cv['scalars'][f'epoch/{key}'] == [(r['step'], r[key]) for r in epochs], key
    assert cv['scalars']['step/loss'] == [(r['step'], r['loss']) for r in batches]
    assert cv['scalars']['result/accuracy'] == [(learn.train_step, m['accuracy'])]
    assert cv['hparams']['run_name'] == 'full/4shot_seed1' and cv['hparams']['card.recipe'] == m['card']['recipe']
    assert cv['hparams'] == read_tensorboard(out/'logs'/'tensorboard')['hparams']  # the same hyper-parameters (TensorBoard's numbers are floats)
    assert _OPEN == []  # the run closed its trackers

def test_accumulation_logs_one_loss_per_optimiser_step(tmp_path):
    res = cli.protocol_run('full', {**QUICK, 'OPTIM.MAX_EPOCH': 1, 'TRAIN.GRAD_ACCUM_STEPS': 2, 'TRAIN.LOG_WITH': 'csv'},
                           output_dir=tmp_path/'run')
    learn = res['learner']
    batches = [r for r in learn.history if 'batch' in r]
    logged = read_csv_log(tmp_path/'run'/'logs'/'csv')['scalars']['step/loss']
    pairs = [batches[i:i + 2] for i in range(0, len(batches), 2)]
    assert len(batches) == 4 and [s for s, _ in logged] == [1, 2] == [learn.train_step - 1, learn.train_step]
    assert [v for _, v in logged] == pytest.approx([sum(r['loss'] for r in p) / len(p) for p in pairs], rel=1e-12)

def test_a_comparison_logs_each_cell_under_its_name(tmp_path, capsys):
    out = tmp_path/'cmp'
    args = ['--config', 'mini', '--shots', '2', '--no-progress', '--strategies', 'zeroshot', '--seeds', '1', '--out', str(out),
            'DATASET.ALSO_TEST', '[]', 'TRAIN.LOG_WITH', 'csv']
    assert compare_main(args) == 0, capsys.readouterr().err
    cell = out/'runs'/'zeroshot'/'2shot_seed1'
    cv = read_csv_log(cell/'logs'/'csv')
    assert cv['hparams']['run_name'] == cell.relative_to(out/'runs').as_posix() == 'zeroshot/2shot_seed1'
    assert cv['hparams']['OUTPUT_DIR'] == str(cell)
    m = json.loads((cell/'metrics.json').read_text())
    assert cv['scalars']['result/accuracy'] == [(0, m['accuracy'])]  # a strategy that trains nothing logs its results at step 0

def test_a_missing_tracker_package_stops_the_run_before_anything_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)  # `import tensorboard` fails, as where it is not installed
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)
    monkeypatch.setattr(cli, 'load_clip', lambda *a, **k: pytest.fail("the backbone was loaded before the tracker was checked"))
    out = tmp_path/'run'
    assert cli.train_main(['--config', 'mini', '--no-progress', 'TRAIN.LOG_WITH', '[csv, tensorboard]', 'OUTPUT_DIR', str(out)]) == 1
    err = capsys.readouterr().err
    assert "TRAIN.LOG_WITH names 'tensorboard', but its package is not installed here: pip install tensorboard" in err, err
    assert not (out/'logs').exists() and not (out/'checkpoints').exists() and not (out/'metrics.json').exists()

def test_a_comparison_refuses_a_missing_tracker_package_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)
    out = tmp_path/'cmp'
    args = ['--config', 'mini', '--shots', '2', '--no-progress', '--strategies', 'zeroshot,bitfit', '--seeds', '1', '--out', str(out),
            'TRAIN.LOG_WITH', 'tensorboard']
    assert compare_main(args) == 1
    assert 'pip install tensorboard' in capsys.readouterr().err
    assert not (out/'runs').exists()

def test_an_unknown_tracker_is_refused_with_the_allowed_ones(tmp_path, capsys):
    out = tmp_path/'run'
    assert cli.train_main(['--config', 'mini', '--no-progress', 'TRAIN.LOG_WITH', 'tensorbord', 'OUTPUT_DIR', str(out)]) == 2
    err = capsys.readouterr().err
    assert "Unknown tracker 'tensorbord' in TRAIN.LOG_WITH. Did you mean 'tensorboard'? Allowed: 'tensorboard', 'csv', 'wandb', 'mlflow'." in err, err
    assert not out.exists()

def test_trackers_a_failed_run_left_open_are_closed_by_the_next_run(tmp_path):
    left = Trackers('csv', tmp_path/'a', 'a').start()
    left.log({'x': 1.}, 1)  # ... and the run fails here
    nxt = Trackers('csv', tmp_path/'b', 'b').start()
    assert left.acc is None and _OPEN == [nxt]
    nxt.close()
    assert _OPEN == [] and read_csv_log(tmp_path/'a'/'csv')['scalars'] == {'x': [(1, 1.)]}
