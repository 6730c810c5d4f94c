"""`clip_strategies_compare` end to end: the table, plots and ranking; a rerun redoes nothing; a killed comparison resumes
and redoes none of its finished runs; bad input is refused before anything runs."""
import csv, json, os, signal, subprocess, sys, time
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
