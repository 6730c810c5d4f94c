"""The same small mini-lab grid on each executor, side by side in one run: wall seconds per executor and whether every
table equals `--executor local`'s (it must: the run folders, the requests and the code that runs them are the same).

    python bench/bench_executors.py                     # zeroshot, bitfit, linear_probe, coop x 1, 4 shots x seed 1, --jobs 2
    python bench/bench_executors.py --shots 1,2,4,8,16 --seeds 1,2,3

Ray runs on a cluster it starts on this machine (all its cores); SLURM's jobs run through submitit's local executor
(`--slurm-local`), a fresh process per run, as on a cluster. Exits 1 when a table differs or a run failed."""
import argparse, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.compare import compare, method_columns

EXECUTORS = [('local', None), ('ray', None), ('slurm', {'slurm_local': True})]


def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--strategies', default='zeroshot,bitfit,linear_probe,coop')
    p.add_argument('--shots', default='1,4')
    p.add_argument('--seeds', default='1')
    p.add_argument('--jobs', type=int, default=2)
    a = p.parse_args(argv)
    grid = dict(strategies=a.strategies.split(','), shots=[int(k) for k in a.shots.split(',')], seeds=[int(s) for s in a.seeds.split(',')],
                jobs=a.jobs, progress=False)
    tmp, rows, ok = Path(tempfile.mkdtemp()), {}, True
    for name, options in EXECUTORS:
        t0 = time.time()
        res = compare(out=tmp/name, executor=name, cluster=options, **grid)
        rows[name] = method_columns(res['rows'])
        same = rows[name] == rows['local']
        ok &= same and not res['failed']
        print(f"{name:>5}: {len(res['rows'])} runs in {time.time() - t0:.1f} s (--jobs {a.jobs}); failed: {len(res['failed'])}; "
              f"table equals local's: {same}", flush=True)
    if not ok: print("FAILED: an executor's table differs from local's, or a run failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == '__main__': sys.exit(main())
