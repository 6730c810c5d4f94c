"""The grid on a cluster (issue 24): a local Ray cluster and submitit's local executor give the table `--executor local`
gives, resume each other's grids (a finished run is never redone), report a failed run with its host and log, cancel
what they started on Ctrl-C, and refuse bad options or a missing engine before anything runs."""
import json, os, signal, threading, time
from pathlib import Path

import pytest

ray = pytest.importorskip('ray')
submitit = pytest.importorskip('submitit')

from clip_strategies import compare as compare_mod
from clip_strategies.compare import (compare, compare_main, run_dir, finished, run_host, check_executor, run_resources, ray_slots,
                                     ComparisonInterrupted, ExecutorUnavailableError, method_columns as comparable)
from clip_strategies.cli import resolve_config

GRID = dict(strategies=['zeroshot', 'bitfit', 'linear_probe'], shots=[2], seeds=[1], progress=False, jobs=2,
            overrides={'OPTIM.MAX_EPOCH': 2, 'DATASET.ALSO_TEST': []})
CELLS = [('zeroshot', 2, 1), ('bitfit', 2, 1), ('linear_probe', 2, 1)]
SLURM_LOCAL = {'slurm_local': True}

@pytest.fixture(scope='module')
def ray_cluster():
    "A Ray cluster of 2 CPUs on this machine, which the comparison joins (and leaves running)."
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()

@pytest.fixture(scope='module')
def local_table(tmp_path_factory):
    res = compare(out=tmp_path_factory.mktemp('local')/'cmp', **GRID)
    assert not res['failed'] and len(res['rows']) == 3
    return comparable(res['rows'])

def test_ray_gives_the_local_table(ray_cluster, local_table, tmp_path):
    res = compare(out=tmp_path/'cmp', executor='ray', **GRID)
    assert not res['failed'] and comparable(res['rows']) == local_table  # every metric, to the last digit
    assert all(run_host(run_dir(tmp_path/'cmp', *g)) for g in CELLS)

def test_slurm_through_submitit_gives_the_local_table(local_table, tmp_path):
    res = compare(out=tmp_path/'cmp', executor='slurm', cluster=SLURM_LOCAL, **GRID)
    assert not res['failed'] and comparable(res['rows']) == local_table
    log = (run_dir(tmp_path/'cmp', *CELLS[0])/'log.txt').read_text()
    assert 'submitted as job' in log and "submitit's logs" in log and list((tmp_path/'cmp'/'slurm').iterdir())

def pids_matching(*words:bytes)->list:
    "Process ids whose command line holds every word (Linux: read from /proc)."
    pids = []
    for p in Path('/proc').glob('[0-9]*'):
        try: cmd = (p/'cmdline').read_bytes()
        except OSError: continue
        if all(w in cmd for w in words) and int(p.name) != os.getpid(): pids.append(int(p.name))
    return pids

def kill_when_started(d:Path, *words:bytes):
    "A thread that SIGKILLs the processes matching `words` once the run in `d` has started (its log has a header)."
    def go():
        deadline = time.time() + 180
        while time.time() < deadline:
            if ' runs ' in ((d/'log.txt').read_text() if (d/'log.txt').exists() else ''): break
            time.sleep(0.05)
        time.sleep(0.3)
        for pid in pids_matching(*words):
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass
    t = threading.Thread(target=go); t.start(); return t

def stamps(out:Path)->dict:
    return {g: (run_dir(out, *g)/'metrics.json').stat().st_mtime_ns for g in CELLS if finished(run_dir(out, *g))}

@pytest.mark.skipif(not Path('/proc').is_dir(), reason="finds the worker through /proc")
def test_a_killed_ray_worker_fails_its_run_and_slurm_finishes_only_that_one(ray_cluster, local_table, tmp_path, capsys):
    out, victim = tmp_path/'cmp', run_dir(tmp_path/'cmp', *CELLS[1])
    t = kill_when_started(victim, b'RunActor')
    first = compare(out=out, executor='ray', **(GRID | dict(jobs=1)))
    t.join()
    assert first['failed'] == [str(victim)] and len(first['rows']) == 2
    printed = capsys.readouterr()
    assert f"failed on {os.uname().nodename}" in printed.out + printed.err and 'log.txt' in printed.out + printed.err  # host and log named
    before = stamps(out)
    second = compare(out=out, executor='slurm', cluster=SLURM_LOCAL, **GRID)  # resumed by another executor
    assert not second['failed'] and stamps(out) | {CELLS[1]: None} == before | {CELLS[1]: None} and set(stamps(out)) == set(CELLS)
    assert 'submitted as job' in (victim/'log.txt').read_text()
    assert comparable(second['rows']) == local_table

@pytest.mark.skipif(not Path('/proc').is_dir(), reason="finds the job through /proc")
def test_a_killed_slurm_job_fails_its_run_and_local_finishes_only_that_one(local_table, tmp_path):
    out, victim = tmp_path/'cmp', run_dir(tmp_path/'cmp', *CELLS[1])
    t = kill_when_started(victim, b'submitit', str(out).encode())
    first = compare(out=out, executor='slurm', cluster=SLURM_LOCAL, **(GRID | dict(jobs=1)))
    t.join()
    assert first['failed'] == [str(victim)] and len(first['rows']) == 2
    before = stamps(out)
    second = compare(out=out, **GRID)
    assert not second['failed'] and {g: v for g, v in stamps(out).items() if g != CELLS[1]} == before
    assert comparable(second['rows']) == local_table

def test_ctrl_c_cancels_the_submitted_jobs(tmp_path, monkeypatch):
    seen = {}
    def interrupt(self, timeout):
        time.sleep(1.0); seen.update(self.running); raise KeyboardInterrupt
    monkeypatch.setattr(compare_mod.SlurmPool, 'done', interrupt)
    with pytest.raises(ComparisonInterrupted, match='0 of 3 runs are finished'):
        compare(out=tmp_path/'cmp', executor='slurm', cluster=SLURM_LOCAL, **GRID)
    assert len(seen) == 2  # jobs=2: two were submitted
    deadline = time.time() + 60
    while time.time() < deadline and not all(j.done() for j in seen): time.sleep(0.2)
    assert all(j.state in ('INTERRUPTED', 'FAILED', 'CANCELLED', 'DONE', 'FINISHED') for j in seen) and all(j.done() for j in seen)
    assert not any(finished(run_dir(tmp_path/'cmp', *g)) for g in CELLS)

def test_ctrl_c_ends_the_ray_workers(ray_cluster, tmp_path, monkeypatch):
    def interrupt(self, timeout): time.sleep(1.0); raise KeyboardInterrupt
    monkeypatch.setattr(compare_mod.RayPool, 'done', interrupt)
    with pytest.raises(ComparisonInterrupted):
        compare(out=tmp_path/'cmp', executor='ray', **GRID)
    deadline = time.time() + 30
    while time.time() < deadline and pids_matching(b'RunActor'): time.sleep(0.2)
    assert not pids_matching(b'RunActor')

QUICK = ['--config', 'mini', '--strategies', 'zeroshot', '--shots', '2', '--seeds', '1', '--no-progress']

@pytest.mark.parametrize('args, code, says', [
    (['--executor', 'ray', '--partition', 'gpu'], 2, "cluster option 'partition' is for --executor slurm, not --executor ray"),
    (['--executor', 'local', '--cache-dir', '/x'], 2, "'cache_dir' is for --executor ray or slurm"),
    (['--executor', 'slurm', '--slurm-local', '--gpus-per-run', '-1'], 2, "gpus_per_run = -1: expected an integer of at least 0"),
    (['--executor', 'ray', '--fresh-processes'], 2, "fresh_processes is for --executor local"),
    (['--executor', 'slurm'], 1, "sbatch is not found"),
])
def test_bad_cluster_options_are_refused_before_anything_runs(tmp_path, capsys, args, code, says):
    if 'sbatch is' in says and __import__('shutil').which('sbatch'): pytest.skip("this machine has SLURM")
    out = tmp_path/'cmp'
    assert compare_main([*QUICK, '--out', str(out), *args]) == code
    assert says in capsys.readouterr().err and not (out/'runs').exists()

def test_a_missing_engine_names_the_pip_command(tmp_path, capsys, monkeypatch):
    real = compare_mod.importlib.import_module
    def no_ray(name, *a, **k):
        if name == 'ray': raise ModuleNotFoundError("No module named 'ray'")
        return real(name, *a, **k)
    monkeypatch.setattr(compare_mod.importlib, 'import_module', no_ray)
    assert compare_main([*QUICK, '--out', str(tmp_path/'cmp'), '--executor', 'ray']) == 1
    assert "pip install 'clip_strategies[ray]'" in capsys.readouterr().err and not (tmp_path/'cmp').exists()
    with pytest.raises(ExecutorUnavailableError): check_executor('ray', None, None, False)

def test_each_run_asks_for_its_loaders_cores_and_a_gpu_where_there_are_any():
    cfg = resolve_config('mini')
    assert run_resources(cfg, {}, {}, 0) == dict(cpus=1, gpus=0)
    assert run_resources(cfg, {'DATALOADER.NUM_WORKERS': 7}, {}, 4) == dict(cpus=8, gpus=1)
    assert run_resources(cfg, {}, {'gpus_per_run': 2, 'cpus_per_run': 3}, 4) == dict(cpus=3, gpus=2)

def test_runs_fit_node_by_node_on_ray():
    node = lambda cpu, gpu=0, alive=True: dict(Alive=alive, Resources=dict(CPU=cpu, GPU=gpu) if gpu else dict(CPU=cpu))
    assert ray_slots([node(8, 4), node(8, 4)], dict(cpus=3, gpus=1)) == 4    # 2 a node: the cores, not the GPUs, limit
    assert ray_slots([node(2), node(2)], dict(cpus=3, gpus=0)) == 0          # 4 cores in all, but no node has 3
    assert ray_slots([node(16, 8, alive=False), node(4)], dict(cpus=1, gpus=0)) == 4
