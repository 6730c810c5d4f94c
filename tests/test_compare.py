"""`clip_strategies_compare` end to end: the table, plots and ranking; a rerun redoes nothing; a killed comparison resumes
and redoes none of its finished runs; bad input is refused before anything runs."""
import csv, json, os, signal, subprocess, sys, time
from conftest import terminal_ctrl_c
from pathlib import Path

from clip_strategies.compare import compare_main

QUICK = ['--config', 'mini', '--shots', '2', '--no-progress']


def finished_runs(out:Path)->dict:
    "{run folder: mtime of its metrics.json} for every finished run."
    return {d: (d/'metrics.json').stat().st_mtime_ns for d in (out/'runs').glob('*/*')
            if (d/'metrics.json').is_file() and (d/'resources.json').is_file()}

def test_table_plots_ranking_and_a_rerun_that_redoes_nothing(tmp_path, capsys):
    out = tmp_path/'cmp'
    args = [*QUICK, '--strategies', 'zeroshot,bitfit', '--seeds', '1', '--out', str(out), 'DATASET.ALSO_TEST', '[]']
    assert compare_main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert '| 1 | bitfit |' in printed and '2 runs in' in printed
    rows = list(csv.DictReader((out/'results.csv').open()))
    assert sorted(r['strategy'] for r in rows) == ['bitfit', 'zeroshot']
    assert all(float(r['peak_rss_mb']) > 0 and r['shots'] == '2' for r in rows)
    assert (out/'compare.png').stat().st_size > 10_000 and (out/'ranking.md').read_text().startswith('At 2 shots')
    before = finished_runs(out)
    assert compare_main(args) == 0
    assert finished_runs(out) == before  # nothing was run again

def test_killed_comparison_resumes_without_redoing_finished_runs(tmp_path):
    out = tmp_path/'cmp'
    args = [*QUICK, '--strategies', 'bitfit,last_n', '--seeds', '1,2', '--out', str(out), 'DATASET.ALSO_TEST', '[]']
    p = subprocess.Popen([sys.executable, '-m', 'clip_strategies.compare', *args], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not finished_runs(out) and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    done = finished_runs(out)
    assert 1 <= len(done) < 4, done  # killed part-way
    assert compare_main(args) == 0
    after = finished_runs(out)
    assert len(after) == 4 and all(after[d] == t for d, t in done.items())  # the finished runs were not redone
    assert len(json.loads((out/'results.json').read_text())) == 4

def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path/'cmp'
    assert compare_main([*QUICK, '--strategies', 'bitfti,lora,coopp', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert "'bitfti' (did you mean 'bitfit'?)" in err and "'coopp'" in err and not out.exists()
    assert compare_main(['--config', 'mini', '--shots', '2,100000', '--strategies', 'bitfit', '--out', str(out)]) == 2
    assert 'NUM_SHOTS=100000 is more than class' in capsys.readouterr().err and not out.exists()
    assert compare_main([*QUICK, '--strategies', 'bitfit', '--out', str(out), 'TRAINER.LAST_N.M', '2']) == 2
    assert 'TRAINER.LAST_N.M' in capsys.readouterr().err

def test_a_folder_with_another_comparison_is_refused(tmp_path, capsys):
    from clip_strategies.compare import check_compare_dir, compare_record, check_strategies
    from clip_strategies.cli import resolve_config
    out = tmp_path/'cmp'
    check_compare_dir(out, compare_record(check_strategies(['bitfit']), [2], [1], resolve_config('mini'), {}))
    assert compare_main([*QUICK, '--strategies', 'bitfit,lora', '--seeds', '1', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert "strategies: the folder has ['bitfit'], this run asks ['bitfit', 'lora']" in err
    assert not (out/'runs').exists()

# ---- issue 19: nothing silently wrong, nothing lost (bad input, folders in use, interrupts) ----
import pytest, shlex, shutil
from clip_strategies import compare as compare_mod

@pytest.fixture
def no_runs(monkeypatch):
    "Fail the test if the comparison starts any run (a refusal must come first)."
    def refuse(*a, **k): raise AssertionError("the comparison started runs instead of refusing")
    monkeypatch.setattr(compare_mod, 'run_pool', refuse)

def children_of(out:Path)->list:
    "Process ids of the comparison's workers (or children) working in `out` (Linux: read from /proc)."
    pids = []
    for p in Path('/proc').glob('[0-9]*'):
        try: cmd = (p/'cmdline').read_bytes().split(b'\0')
        except OSError: continue
        if (b'--one' in cmd or b'--worker' in cmd) and any(str(out).encode() in c for c in cmd): pids.append(int(p.name))
    return pids

def start_comparison(out:Path, epochs:int=400)->tuple:
    "A comparison in a subprocess whose one run trains long enough to be caught running; returns (process, its args)."
    args = [*QUICK, '--strategies', 'bitfit', '--seeds', '1', '--out', str(out), 'DATASET.ALSO_TEST', '[]', 'OPTIM.MAX_EPOCH', str(epochs)]
    p = subprocess.Popen([sys.executable, '-m', 'clip_strategies.compare', *args], start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=terminal_ctrl_c)
    log, deadline = out/'runs'/'bitfit'/'2shot_seed1'/'log.txt', time.time() + 120
    while not (log.exists() and ' runs ' in log.read_text()) and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    assert children_of(out), p.communicate()  # the child has loaded the library and runs
    return p, args

def gone_within(pids:list, seconds:float)->bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(Path(f'/proc/{pid}').exists() and 'Z' not in Path(f'/proc/{pid}/stat').read_text().split(')')[-1][:3]
                   for pid in pids): return True
        time.sleep(0.1)
    return False

def test_duplicates_are_refused_and_seeds_counted_once(tmp_path, capsys, no_runs):
    out = tmp_path/'cmp'
    for opt, value, says in (('--seeds', '1,1', 'seeds'), ('--shots', '2,2', 'shots'), ('--strategies', 'zeroshot,ZeroShot', "'zeroshot'")):
        args = ['--config', 'mini', '--no-progress', '--out', str(out), '--strategies', 'zeroshot', '--shots', '2', '--seeds', '1', opt, value]
        assert compare_main(args) == 2
        err = capsys.readouterr().err
        assert says in err and 'more than once' in err, err
    assert not out.exists()
    from clip_strategies.compare import ranking_table
    row = dict(strategy='bitfit', shots=2, seed=1, task='classification', accuracy=30., accuracy_before=20., trainable_params=1,
               train_seconds=1., peak_rss_mb=1.)
    assert 'over 1 seed(s)' in ranking_table([row, dict(row)])

def test_an_empty_strategy_list_is_an_error(tmp_path, capsys, no_runs):
    out = tmp_path/'cmp'
    assert compare_main([*QUICK, '--strategies', '', '--out', str(out)]) == 2
    assert 'No strategies to compare' in capsys.readouterr().err and not out.exists()

def test_overrides_the_grid_owns_are_refused(tmp_path, capsys, no_runs):
    out = tmp_path/'cmp'
    assert compare_main([*QUICK, '--strategies', 'zeroshot', '--out', str(out), 'DATASET.NUM_SHOTS', '4', 'SEED', '7']) == 2
    err = capsys.readouterr().err
    assert 'DATASET.NUM_SHOTS' in err and '--shots' in err and 'SEED' in err and '--seeds' in err and not out.exists()

def test_a_folder_with_files_the_comparison_did_not_write_is_refused(tmp_path, capsys, no_runs):
    out = tmp_path/'mine'; out.mkdir()
    (out/'results.csv').write_text('my,own\n1,2\n'); (out/'ranking.md').write_text('my notes\n')
    assert compare_main([*QUICK, '--strategies', 'zeroshot', '--seeds', '1', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'results.csv' in err and 'ranking.md' in err, err
    assert (out/'results.csv').read_text() == 'my,own\n1,2\n' and sorted(p.name for p in out.iterdir()) == ['ranking.md', 'results.csv']

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason="finds the children through /proc")
def test_a_folder_in_use_is_refused_and_children_die_with_their_parent(tmp_path, capsys):
    out = tmp_path/'cmp'
    p, args = start_comparison(out)
    try:
        assert compare_main(args) == 2  # a second comparison into the same folder
        err = capsys.readouterr().err
        assert f'in use by process {p.pid}' in err, err
        kids = children_of(out)
        os.kill(p.pid, signal.SIGKILL); p.wait()
        assert gone_within(kids, 5), f"children {kids} outlived their killed parent"
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
        for pid in children_of(out): os.kill(pid, signal.SIGKILL)

def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path/'cmp'
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    out.mkdir(); (out/'.lock').write_text(json.dumps(dict(pid=dead.pid, host=os.uname().nodename, started='earlier', command='x')))
    assert compare_main([*QUICK, '--strategies', 'zeroshot', '--seeds', '1', '--out', str(out), 'DATASET.ALSO_TEST', '[]']) == 0
    printed = capsys.readouterr()
    assert f'process {dead.pid}' in printed.out + printed.err and 'took over' in printed.out + printed.err
    assert not (out/'.lock').exists()  # released at the end

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason="finds the children through /proc")
def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    out = tmp_path/'cmp'
    p, args = start_comparison(out)
    kids = children_of(out)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and '0 of 1 runs' in lines[0], err
    assert lines[0].endswith(shlex.join(['clip_strategies_compare', *args])), err
    assert gone_within(kids, 5)
    assert not (out/'.lock').exists()

def test_a_corrupt_compare_json_or_metrics_json_is_named_with_what_to_do(tmp_path, capsys):
    out = tmp_path/'cmp'
    args = [*QUICK, '--strategies', 'zeroshot', '--seeds', '1', '--out', str(out), 'DATASET.ALSO_TEST', '[]']
    assert compare_main(args) == 0
    capsys.readouterr()
    metrics = out/'runs'/'zeroshot'/'2shot_seed1'/'metrics.json'
    metrics.write_text('{"task": ')
    assert compare_main(args) == 2
    err = capsys.readouterr().err
    assert str(metrics) in err and 'delete' in err and str(metrics.parent) in err, err
    shutil.rmtree(metrics.parent)  # as the message says
    (out/'compare.json').write_text('{"strategies": [')
    assert compare_main(args) == 2
    err = capsys.readouterr().err
    assert str(out/'compare.json') in err and 'delete' in err, err
    (out/'compare.json').unlink()  # as the message says
    assert compare_main(args) == 0 and metrics.is_file()

def test_a_combination_is_checked_up_front_and_no_table_is_claimed_when_none_was_written(tmp_path, capsys, monkeypatch):
    out = tmp_path/'cmp'
    assert compare_main([*QUICK, '--strategies', 'zeroshot,lora+lora', '--seeds', '1', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'lora+lora' in err and 'both train' in err and not (out/'runs').exists(), err
    monkeypatch.setattr(compare_mod, 'run_pool', lambda pool, todo, *a, **k: list(todo))  # every run fails
    assert compare_main([*QUICK, '--strategies', 'zeroshot', '--seeds', '1', '--out', str(out)]) == 1
    printed = capsys.readouterr()
    assert '0 runs in' not in printed.out and 'no run finished' in printed.err, printed
    assert not (out/'results.csv').exists()
