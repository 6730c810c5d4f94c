"The command line end to end: outputs, bad input, exact resume after a crash, two processes, retrieval."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
QUICK = ['--no-progress', 'DATASET.NUM_SHOTS', '4', 'DATALOADER.TRAIN_X.BATCH_SIZE', '8']

def cli(*args, env=None, timeout=600):
    "Run `clip_strategies_train` in a fresh process."
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    return subprocess.run([sys.executable, '-m', 'clip_strategies.cli', *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)

def weights(path): return load_file(str(path))

def test_run_writes_metrics_weights_and_checkpoints(tmp_path):
    out = tmp_path/'run'
    res = cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'before accuracy' in res.stdout and '-> after accuracy' in res.stdout
    m = json.loads((out/'metrics.json').read_text())
    for k in ('strategy', 'backbone', 'dataset', 'num_shots', 'trainable_params', 'total_params', 'train_seconds', 'accuracy'):
        assert k in m, k
    assert m['strategy'] == 'full' and m['num_shots'] == 4 and 0 <= m['accuracy'] <= 100
    assert (out/'model.safetensors').is_file() and (out/'checkpoints'/'last.json').is_file()

@pytest.mark.parametrize('args, message', [
    (['OPTIM.MAX_EPOHC', '2'], "Did you mean 'OPTIM.MAX_EPOCH'"),
    (['OPTIM.LR', 'fast'], "OPTIM.LR = 'fast'"),
    (['TRAINER.NAME', 'ful'], "Unknown strategy 'ful'"),
    (['DATASET.NAME', 'mini_shapez'], 'mini_shapes'),
    (['MODEL.BACKBONE.NAME', 'ViT-B/61'], 'ViT-B-16'),
    (['DATASET.NUM_SHOTS', '100000'], '100000'),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path/'run'
    quick = QUICK[:1] + QUICK[3:] if args[0] == 'DATASET.NUM_SHOTS' else QUICK  # a key given twice is refused on its own
    res = cli('--config', 'mini', *quick, 'OUTPUT_DIR', str(out), *args)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert message in res.stderr, res.stderr[-2000:]
    assert not (out/'metrics.json').exists() and not (out/'checkpoints').exists()

def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    args = ['--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '4', 'TRAINER.NAME', 'full']
    full = tmp_path/'uninterrupted'
    assert cli(*args, 'OUTPUT_DIR', str(full)).returncode == 0
    crashed = tmp_path/'crashed'
    p = subprocess.Popen([sys.executable, '-m', 'clip_strategies.cli', *args, 'OUTPUT_DIR', str(crashed)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    last = crashed/'checkpoints'/'last.json'
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if last.is_file() and json.loads(last.read_text())['epoch'] >= 1: break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    assert json.loads(last.read_text())['epoch'] < 3, "the run trained every epoch before it could be interrupted"
    res = cli(*args, 'OUTPUT_DIR', str(crashed), '--resume')
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = weights(full/'model.safetensors'), weights(crashed/'model.safetensors')
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    assert json.loads((full/'metrics.json').read_text())['accuracy'] == json.loads((crashed/'metrics.json').read_text())['accuracy']

def test_resume_refuses_another_strategy_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path/'run'
    assert cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)).returncode == 0
    before = (out/'checkpoints'/'last.json').read_text()
    res = cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '2', 'TRAINER.NAME', 'projection', 'OUTPUT_DIR', str(out), '--resume')
    assert res.returncode == 2 and 'full' in res.stderr and 'projection' in res.stderr, res.stderr[-2000:]
    assert (out/'checkpoints'/'last.json').read_text() == before

def test_rerun_into_a_finished_run_is_refused(tmp_path):
    out = tmp_path/'run'
    assert cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)).returncode == 0
    metrics = (out/'metrics.json').read_text()
    res = cli('--config', 'mini', *QUICK, 'OUTPUT_DIR', str(out))
    assert res.returncode == 2 and '--resume' in res.stderr
    assert (out/'metrics.json').read_text() == metrics

def test_truncated_checkpoint_is_named(tmp_path):
    out = tmp_path/'run'
    assert cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)).returncode == 0
    ptr = json.loads((out/'checkpoints'/'last.json').read_text())
    state = out/'checkpoints'/ptr['model']
    state.write_bytes(state.read_bytes()[:1000])
    (out/'metrics.json').unlink()
    res = cli('--config', 'mini', *QUICK, 'OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out), '--resume')
    assert res.returncode == 2 and ptr['model'] in res.stderr, res.stderr[-2000:]

def torchrun(*args, port):
    "A `torchrun --nproc_per_node 2` command line running the CLI (CPU processes, gloo)."
    return [str(Path(sys.executable).with_name('torchrun')), '--nproc_per_node', '2', '--master_port', str(port),
            '-m', 'clip_strategies.cli', *args]

def test_two_processes_resume_exactly_after_a_kill(tmp_path):
    "Under DDP only the main process writes; every process's RNG state is kept, so a killed 2-process run resumes exactly."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    args = ['--config', 'mini', '--no-progress', 'DATASET.NUM_SHOTS', '16', 'DATALOADER.TRAIN_X.BATCH_SIZE', '8', 'OPTIM.MAX_EPOCH', '4',
            'DATASET.ALSO_TEST', '[]', 'INPUT.TRANSFORMS', '[random_flip, normalize]']  # random flips: each rank's own RNG matters
    full = tmp_path/'uninterrupted'
    res = subprocess.run(torchrun(*args, 'OUTPUT_DIR', str(full), port=29517), capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert json.loads((full/'metrics.json').read_text())['processes'] == 2
    assert res.stdout.count('-> after') == 1  # only the main process reports
    crashed = tmp_path/'crashed'
    p = subprocess.Popen(torchrun(*args, 'OUTPUT_DIR', str(crashed), port=29518), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = crashed/'checkpoints'/'last.json', time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if last.is_file() and json.loads(last.read_text())['epoch'] >= 1: break
        time.sleep(0.05)
    subprocess.run(['pkill', '-KILL', '-f', str(crashed)])  # torchrun and its workers (they run in sessions of their own)
    p.wait(); time.sleep(0.5)
    assert subprocess.run(['pgrep', '-f', str(crashed)], capture_output=True).stdout == b'', "a worker survived the kill"
    assert json.loads(last.read_text())['epoch'] < 3, "the run trained every epoch before it could be interrupted"
    files = sorted(f.name for f in (crashed/'checkpoints').iterdir())
    assert files[0] == 'last.json' and len(files) == 3, files  # one writer: one model, one state file
    res = subprocess.run(torchrun(*args, 'OUTPUT_DIR', str(crashed), '--resume', port=29519), capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    a, b = weights(full/'model.safetensors'), weights(crashed/'model.safetensors')
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

def test_retrieval_run_reports_recall(tmp_path):
    out = tmp_path/'ret'
    res = cli('--config', 'mini', '--no-progress', 'DATASET.NAME', 'mini_captions', 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['task'] == 'retrieval' and 0 <= m['i2t_r1'] <= 100 and 0 <= m['t2i_r5'] <= 100
