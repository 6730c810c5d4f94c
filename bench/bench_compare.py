"""Benchmark: what a comparison costs beyond its training — workers that live across runs and work shared across
runs, against the old path (a fresh process per run, nothing reused), side by side in one run on the mini lab.

Measured, in this order:
(a) per-run overhead: wall time of one `zeroshot` run (it trains nothing) in a fresh process, and in a worker that has
    already run one (the second run of a comparison);
(b) the README's main job (every strategy, 16 shots, seed 1, `--jobs 2`) with `fresh_processes=True` (old) and with
    workers (new): the ratio new/old must be at most 0.5, and both tables must be equal (metrics to the last digit);
(c) with `--grid`, a larger grid (default: every strategy x 1, 4, 16 shots x seed 1; `--grid-shots 1,2,4,8,16
    --grid-seeds 1,2,3` is the default 360-run grid, about an hour for the old path on 2 cores): target new/old <= 0.3;
(d) encoder work of the head-only and cache methods run one after another in one process (as a comparison's worker runs
    them): images passed through the image tower with the reuse (kept base model, kept "before" metrics, kept split
    features) and without it. A split is encoded once per worker, then checked on its first batch at each reuse; what is
    left is the work that depends on the method (Tip's augmented cache, CoOp's training passes). Target: at most half.
The old path runs with `CLIP_STRATEGIES_FEATURE_SETS=0` (no reuse of encoded splits), as before this change. The bench
exits 1 when a target is missed or the tables differ.

    python bench/bench_compare.py                 # (a), (b), (d)
    python bench/bench_compare.py --grid          # and (c)
    python bench/bench_compare.py --skip-main     # (a) and (d) only
"""
import argparse, contextlib, json, os, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.compare import compare, method_columns as comparable, run_dir, write_request, run_overrides, run_one
from clip_strategies.cli import resolve_config
from clip_strategies.models import keeping_base_models
from clip_strategies.zeroshot import FEATURE_SETS_ENV

MAIN_TARGET, GRID_TARGET, ENCODE_TARGET = 0.5, 0.3, 0.5
HEAD_ONLY = ['zeroshot', 'zs_linear', 'linear_probe', 'gda', 'tip', 'tip_f', 'clip_adapter', 'coop']


def timed_compare(out:Path, old:bool, **kw)->tuple:
    "Wall seconds and rows of one comparison into a fresh folder, by the old path (`old`) or by workers."
    env_before = os.environ.get(FEATURE_SETS_ENV)
    if old: os.environ[FEATURE_SETS_ENV] = '0'
    try:
        t0 = time.time()
        res = compare(out=out, fresh_processes=old, progress=False, **kw)
    finally:
        if env_before is None: os.environ.pop(FEATURE_SETS_ENV, None)
        else: os.environ[FEATURE_SETS_ENV] = env_before
    if res['failed']: raise SystemExit(f"runs failed: {res['failed']}")
    return time.time() - t0, res['rows']


def side_by_side(name:str, tmp:Path, target:float, **kw)->bool:
    "Run a grid both ways; print the times and ratio; True when the ratio meets `target` and the tables are equal."
    t_old, rows_old = timed_compare(tmp/f'{name}_old', True, **kw)
    t_new, rows_new = timed_compare(tmp/f'{name}_new', False, **kw)
    same, ratio = comparable(rows_old) == comparable(rows_new), t_new / t_old
    print(f"{name}: {len(rows_new)} runs; old (a process per run) {t_old:.1f} s, new (workers) {t_new:.1f} s; "
          f"new/old = {ratio:.2f} (target <= {target}); tables equal: {same}", flush=True)
    return same and ratio <= target


def zeroshot_overhead(tmp:Path)->dict:
    "Wall seconds of a zeroshot run in a fresh process, and as the second run of a worker."
    dirs = [run_dir(tmp/'overhead', 'zeroshot', 16, s) for s in (1, 2, 3)]
    for d, s in zip(dirs, (1, 2, 3)): write_request(d, resolve_config('mini'), run_overrides('zeroshot', 16, s, d, {}))
    t0 = time.time()
    subprocess.run([sys.executable, '-m', 'clip_strategies.compare', '--one', str(dirs[0])], check=True,
                   env=dict(os.environ, **{FEATURE_SETS_ENV: '0'}), capture_output=True)
    fresh = time.time() - t0
    code = ("import time, sys; from pathlib import Path; from clip_strategies.compare import run_one; "
            "from clip_strategies.models import keeping_base_models\n"
            "with keeping_base_models():\n run_one(Path(sys.argv[1])); t = time.time(); run_one(Path(sys.argv[2])); print(time.time() - t)")
    out = subprocess.run([sys.executable, '-c', code, str(dirs[1]), str(dirs[2])], check=True, capture_output=True, text=True)
    return dict(fresh=fresh, in_worker=float(out.stdout.strip().splitlines()[-1]))


def encoder_work(tmp:Path, reuse:bool, shots:int=16)->int:
    "Images through the image tower when the head-only and cache methods run one after another in one process."
    import open_clip.transformer as oct
    seen, forward = {}, oct.VisionTransformer.forward
    def counting(self, x, *a, **k):
        seen['images'] = seen.get('images', 0) + x.shape[0]
        return forward(self, x, *a, **k)
    oct.VisionTransformer.forward = counting
    os.environ[FEATURE_SETS_ENV] = '8' if reuse else '0'
    try:
        with keeping_base_models() if reuse else contextlib.nullcontext():
            for s in HEAD_ONLY:
                d = run_dir(tmp/f'encodes_{reuse}', s, shots, 1)
                write_request(d, resolve_config('mini'), run_overrides(s, shots, 1, d, {}))
                run_one(d)
    finally: oct.VisionTransformer.forward = forward; os.environ.pop(FEATURE_SETS_ENV)
    return seen['images']


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--grid', action='store_true', help="also (c), the larger grid")
    ap.add_argument('--grid-shots', default='1,4,16'); ap.add_argument('--grid-seeds', default='1')
    ap.add_argument('--skip-main', action='store_true', help="skip (b), the README's main job both ways")
    ap.add_argument('--warm-cache', action='store_true', help="keep the user's feature cache (default: an empty one, as a first comparison)")
    a = ap.parse_args()
    tmp, ok = Path(tempfile.mkdtemp()), True
    if not a.warm_cache: os.environ['CLIP_STRATEGIES_CACHE'] = str(tmp/'cache')  # the new path starts with no features on disk
    o = zeroshot_overhead(tmp)
    print(f"per-run overhead (a zeroshot run): fresh process {o['fresh']:.1f} s, in a worker {o['in_worker']:.1f} s; "
          f"ratio {o['in_worker'] / o['fresh']:.2f}", flush=True)
    if not a.skip_main: ok &= side_by_side('main job', tmp, MAIN_TARGET, strategies=None, shots=[16], seeds=[1], jobs=2)
    if a.grid:
        shots, seeds = [int(v) for v in a.grid_shots.split(',')], [int(v) for v in a.grid_seeds.split(',')]
        ok &= side_by_side('grid', tmp, GRID_TARGET, strategies=None, shots=shots, seeds=seeds, jobs=2)
    before, after = encoder_work(tmp, False), encoder_work(tmp, True)
    print(f"encoder work of {len(HEAD_ONLY)} head-only and cache methods in one process: {before} images through the image "
          f"tower without reuse, {after} with it; ratio {after / before:.2f} (target <= {ENCODE_TARGET})", flush=True)
    ok &= after / before <= ENCODE_TARGET
    if not ok: print("FAILED: a target was missed or the two paths' tables differ", file=sys.stderr); sys.exit(1)


if __name__ == '__main__': main()
