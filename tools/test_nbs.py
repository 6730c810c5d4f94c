"""Run every notebook's tests with `nbdev_test`, each notebook in a process of its own, a few at a time.

`nbdev_test` on the whole folder runs the notebooks in a pool of worker processes that each keep what the notebooks they
ran left in memory (every strategy notebook builds a 151M-parameter ViT-B/32 for its widget); on a 24 GiB machine two
workers reached 23 GiB. One process per notebook frees everything after each one, and the failures are the same.

    python tools/test_nbs.py                    # every notebook in nbs/, two at a time
    python tools/test_nbs.py nbs/50_tip.ipynb   # some of them
    python tools/test_nbs.py --jobs 1 --flags slow
"""
import argparse, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_one(nb:Path, flags:str)->tuple:
    "Run `nbdev_test` on one notebook; (notebook, exit code, seconds, output)."
    t0 = time.time()
    cmd = ['nbdev_test', '--path', str(nb)] + (['--flags', flags] if flags else [])
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={'OMP_NUM_THREADS': '1', **os.environ})
    return nb, p.returncode, time.time() - t0, p.stdout + p.stderr

def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help="notebooks to test (default: every one in nbs/)")
    ap.add_argument('--jobs', type=int, default=2, help="notebooks at once")
    ap.add_argument('--flags', default='', help="flags of cells to run that are skipped by default (e.g. slow)")
    a = ap.parse_args(argv)
    nbs = [Path(p).resolve() for p in a.notebooks] or sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    failed, t0 = [], time.time()
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        for nb, code, secs, out in ex.map(lambda nb: test_one(nb, a.flags), nbs):
            print(f"{'ok  ' if code == 0 else 'FAIL'} {nb.name:32} {secs:6.1f} s", flush=True)
            if code != 0: failed.append(nb.name); print(out[-4000:], flush=True)
    print(f"{len(nbs) - len(failed)} of {len(nbs)} notebooks passed in {time.time() - t0:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ''))
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
