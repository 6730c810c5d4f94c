"""Benchmark: Tip-Adapter's vectorised alpha/beta search against nested Python loops over the same grid.

`clip_strategies.tip.search` evaluates the whole grid (the released defaults: 200 beta values x 20 alpha values) as a few
batched matrix products. Measured side by side in one run, on the same random validation features, cache and zero-shot
weights (normalised, D=512, a 16-shot x 10-class cache), for each validation size in `--val`:

- `loop (released)`: the released code's nested loop: for every (beta, alpha) it recomputes the affinities `f·Kᵀ`, the
  cache logits `exp(-beta(1 - f·Kᵀ))·L` and the zero-shot logits `100·f·Wᵀ`, then the accuracy;
- `loop (hoisted)`: the same loop with `f·Kᵀ` and `100·f·Wᵀ` computed once outside it (a stronger baseline);
- `search`: the library's vectorised search (affinities once; per block of beta values the cache logits `[B, N, C]`; every
  alpha at once from each image's interval of winning alphas, see `alpha_bounds`), with its default block of 2**20
  affinity elements, and the same with `--chunk` (another block size; the pair found is the same, the time shows what the
  block size costs).

Printed: each one's best time over `--repeat` runs, the speed ratios, and whether the best pair (the first strict maximum in
the released loop order, beta outer, alpha inner) is identical. Features are noisy copies of random class prototypes, so
the grid has a real accuracy landscape (not all ties).

    python bench/bench_tip_search.py [--val 40,400] [--steps 200 20] [--threads 2] [--repeat 3]
"""
import argparse, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.tip import TipAdapter, search, search_grid


def problem(n_val, n_cls=10, shots=16, dim=512, seed=0):
    "Text weights, cache keys/labels and validation features/labels with class structure (so accuracy varies over the grid)."
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(n_cls, dim, generator=g), dim=-1)
    noisy = lambda y, s: F.normalize(protos[y] + s * torch.randn(len(y), dim, generator=g) / dim ** .5, dim=-1)
    text = noisy(torch.arange(n_cls), 4.5)  # a weak zero-shot head (about 30% on validation; the cache alone about 70%)
    ky = torch.arange(n_cls).repeat_interleave(shots)
    vy = torch.randint(0, n_cls, (n_val,), generator=g)
    return text, noisy(ky, 6.), ky, noisy(vy, 6.), vy


def loop_released(adapter, feats, labels, betas, alphas):
    "The released nested loop: every pair recomputes affinities, cache logits and zero-shot logits; first strict maximum."
    best, pair = 0., None
    for beta in betas.tolist():
        for alpha in alphas.tolist():
            affinity = feats @ adapter.cache_keys.t()
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ adapter.cache_values
            clip_logits = 100. * feats @ adapter.text_weights.t()
            acc = float((clip_logits + cache_logits * alpha).argmax(-1).eq(labels).float().mean() * 100)
            if acc > best: best, pair = acc, (alpha, beta)
    return best, pair


def loop_hoisted(adapter, feats, labels, betas, alphas):
    "The same loop with the affinities and zero-shot logits computed once."
    best, pair = 0., None
    affinity, clip_logits = feats @ adapter.cache_keys.t(), 100. * feats @ adapter.text_weights.t()
    for beta in betas.tolist():
        for alpha in alphas.tolist():
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ adapter.cache_values
            acc = float((clip_logits + cache_logits * alpha).argmax(-1).eq(labels).float().mean() * 100)
            if acc > best: best, pair = acc, (alpha, beta)
    return best, pair


def timed(f, repeat):
    "Best wall time of `repeat` calls, and the last result."
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); r = f(); ts.append(time.perf_counter() - t0)
    return min(ts), r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--val', default='40,400', help="validation sizes, comma-separated (40: the 16-shot split's val, 4 per class)")
    ap.add_argument('--steps', type=int, nargs=2, default=[200, 20], help="beta steps, alpha steps")
    ap.add_argument('--scale', type=float, nargs=2, default=[7., 3.], help="beta scale, alpha scale")
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--chunk', type=int, default=2**23, help="another block size (affinity elements) tried beside search's default")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    betas, alphas = search_grid(args.scale, args.steps)
    print(f"grid {len(betas)} beta x {len(alphas)} alpha = {len(betas) * len(alphas)} pairs; cache 16 shots x 10 classes, "
          f"D=512; {args.threads} CPU thread(s); best of {args.repeat}\n")
    print(f"{'val N':>6} {'loop released':>14} {'loop hoisted':>13} {'search':>9} {'released/search':>16} "
          f"{'hoisted/search':>15} {'search chunk':>12} {'released/chunk':>14}  best pair (alpha, beta) / val acc: loop | search | identical")
    for n in [int(v) for v in args.val.split(',')]:
        text, keys, ky, vf, vy = problem(n)
        ad = TipAdapter(text, keys, ky)
        # the loops use float32 grid values exactly as `search` does, so the pairs are comparable bit for bit
        b32, a32 = betas.float(), alphas.float()
        t_rel, (acc_rel, pair_rel) = timed(lambda: loop_released(ad, vf, vy, b32, a32), 1)
        t_hoi, (acc_hoi, pair_hoi) = timed(lambda: loop_hoisted(ad, vf, vy, b32, a32), args.repeat)
        t_vec, found = timed(lambda: search(ad, vf, vy, args.scale, args.steps), args.repeat)
        t_chk, found_c = timed(lambda: search(ad, vf, vy, args.scale, args.steps, chunk=args.chunk), args.repeat)
        pair_vec = (found['alpha'], found['beta'])
        same = (pair_rel == pair_hoi and all(abs(a - b) < 1e-6 for a, b in zip(pair_hoi, pair_vec))
                and abs(acc_hoi - found['accuracy']) < 1e-4 and (found_c['alpha'], found_c['beta']) == pair_vec)
        print(f"{n:>6} {t_rel*1e3:>11.1f} ms {t_hoi*1e3:>10.1f} ms {t_vec*1e3:>6.1f} ms {t_rel/t_vec:>15.1f}x {t_hoi/t_vec:>14.1f}x {t_chk*1e3:>9.1f} ms {t_rel/t_chk:>13.1f}x  "
              f"({pair_hoi[0]:.4f}, {pair_hoi[1]:.4f}) {acc_hoi:.2f}% | ({pair_vec[0]:.4f}, {pair_vec[1]:.4f}) "
              f"{found['accuracy']:.2f}% | {same}")
        grid = found['grid']
        print(f"{'':>6} grid accuracy range {float(grid.min()):.2f}..{float(grid.max()):.2f}%, "
              f"{int((grid == grid.max()).sum())} pair(s) at the maximum")


if __name__ == '__main__': main()
