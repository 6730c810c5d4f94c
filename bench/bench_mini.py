"""Benchmark the mini lab: pretraining wall time (vs the 5-minute target on 2 CPU cores), loading time, and zero-shot
accuracy on mini_shapes and mini_shift.

    python bench/bench_mini.py                # pretrain from scratch (seed 0, 2 threads), then evaluate
    python bench/bench_mini.py --load-only    # evaluate the shipped weights only
    python bench/bench_mini.py --threads 2 --steps 1000 --out /tmp/mini.safetensors
"""
import argparse, os, tempfile, time
from pathlib import Path

TARGET_PRETRAIN_S, TARGET_LOAD_S = 300., 2.

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads for pretraining and evaluation')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--steps', type=int, default=None, help='pretraining steps (default: MINI_STEPS)')
    ap.add_argument('--out', default=None, help='where to write the built weights (default: a temporary folder)')
    ap.add_argument('--load-only', action='store_true', help='skip pretraining; evaluate the shipped weights')
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from clip_strategies.mini import MINI_STEPS, MINI_WEIGHTS, build_mini, load_mini, mini_metadata, mini_preprocess, MINI_DATASETS
    from clip_strategies.zeroshot import evaluate_classification
    zero_shot = lambda model, tok, name: evaluate_classification(model, tok, MINI_DATASETS[name]('test', mini_preprocess()), batch_size=512)['top1']
    print(f'torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f}')

    path = MINI_WEIGHTS
    if not args.load_only:
        path = Path(args.out or Path(tempfile.mkdtemp())/'mini.safetensors')
        steps = args.steps or MINI_STEPS
        t = time.perf_counter()
        build_mini(path, seed=args.seed, steps=steps, threads=args.threads, evaluate=None, log_every=max(1, steps//5))
        wall = time.perf_counter() - t
        print(f'pretraining: {steps} steps in {wall:.1f}s = {wall/TARGET_PRETRAIN_S:.2f} x the {TARGET_PRETRAIN_S:.0f}s target')
    t = time.perf_counter()
    model, _, tok = load_mini('cpu', path=path)
    load = time.perf_counter() - t
    print(f'loading {path}: {load:.2f}s = {load/TARGET_LOAD_S:.2f} x the {TARGET_LOAD_S:.0f}s target; '
          f'{path.stat().st_size/1e6:.2f} MB')
    for name, target in (('mini_shapes', '>= 90'), ('mini_shift', '<= 60')):
        print(f'{name:12s} zero-shot top-1: {zero_shot(model, tok, name):5.1f}%  (target {target})')
    print('metadata:', {k: v for k, v in mini_metadata(path).items() if k not in ('config', 'tokenizer_json')})

if __name__ == '__main__': main()
