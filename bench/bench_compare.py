"""Benchmark: `clip_strategies_compare` on the mini lab — the speed-up of running runs side by side, and the README's main
job against its target (every strategy, 16 shots, one seed, at most 15 minutes on 2 CPU cores).

Measured in one run: the same grid (default: four strategies of different kinds, 16 shots, seed 1) with `--jobs 1`
and with `--jobs 2`, each into a fresh folder; printed: both wall times and their ratio. With `--all`, every registered
strategy with `--jobs 2`, and its wall time as a share of the 15-minute target (a ratio under 1 meets it).

    python bench/bench_compare.py
    python bench/bench_compare.py --strategies zeroshot,coop,lora --all
"""
import argparse, tempfile, time
from pathlib import Path
from clip_strategies.compare import compare

TARGET_S = 15 * 60  # the target for every strategy on the mini lab, 2 CPU cores

def timed(strategies, jobs:int, out:Path)->float:
    "Wall seconds of one comparison into a fresh folder (it must finish every run)."
    t0 = time.time()
    res = compare(strategies, shots=[16], seeds=[1], out=out, jobs=jobs, progress=False)
    if res['failed']: raise SystemExit(f"runs failed: {res['failed']}")
    return time.time() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--strategies', default='zeroshot,bitfit,lora,gda', help="comma-separated grid for the jobs 1 vs 2 ratio")
    ap.add_argument('--all', action='store_true', help="also every strategy with --jobs 2, against the 15-minute target")
    a = ap.parse_args()
    names, tmp = a.strategies.split(','), Path(tempfile.mkdtemp())
    one, two = timed(names, 1, tmp/'jobs1'), timed(names, 2, tmp/'jobs2')
    print(f"{len(names)} runs: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s, ratio jobs1/jobs2 = {one / two:.2f}")
    if a.all:
        every = timed(None, 2, tmp/'all')
        print(f"every strategy, --jobs 2: {every:.0f} s; ratio to the 15-minute target = {every / TARGET_S:.2f}")

if __name__ == '__main__': main()
