"""Benchmark: a CoOp training epoch on cached image features against the same epoch without the cache.

CoOp trains only its context vectors, in front of the text encoder; the image tower is frozen, so the Learner's
`FeatureCacheCB` encodes the training images once and every later step reuses their features. Without the callback
(left out of the callbacks, as here) every step runs the image tower again. Both runs use the same model (a randomly
initialised open_clip `--model`, structure only, or the mini CLIP), the same `--images` random images with 10 classes,
batch 32, SGD at CoOp's rate and `--epochs` epochs, measured side by side in one run.

Printed: the time of a training epoch without the cache and with it (the cache is built once, in `before_fit`, so an
epoch with the cache is pure reuse), their ratio, the cache-building time, the whole runs' times, and the largest
difference between the per-step losses of the two runs (same data order, same initial context).

    python bench/bench_coop_cache.py [--model ViT-B-32] [--images 128] [--epochs 2] [--threads 2] [--n-ctx 16]
"""
import argparse, copy, sys, time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.models import random_clip, load_clip
from clip_strategies.optim import OptFunc
from clip_strategies.objectives import TextHeadClassification
from clip_strategies.learner import Learner, dataloaders
from clip_strategies.callbacks import standard_cbs
from clip_strategies.feature_cache import FeatureCacheCB
from clip_strategies.strategy import get_strategy
from clip_strategies.core import count_params
import clip_strategies.prompt  # registers coop
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_cache import CacheTimer, EpochTimer  # the same timers as the feature-cache bench


def run(model0, n_ctx, ds, classnames, epochs, cache):
    "One CoOp fit on a copy of `model0`; returns (learner, epoch times, cache build time, total time)."
    torch.manual_seed(0)  # the same initial context on both sides
    strategy = get_strategy('coop', n_ctx=n_ctx)
    model = strategy.apply(copy.deepcopy(model0))
    et, ct = EpochTimer(), CacheTimer()
    cbs = standard_cbs(progress=False, device='cpu') + [et, ct] + ([FeatureCacheCB(required=True)] if cache else [])
    objective = strategy.objective(model, TextHeadClassification(model.tokenizer, classnames, strategy.prompt_templates(model, [])))
    learn = Learner(model, dataloaders(ds, batch_size=32, seed=0), objective, lr=0.002, epochs=epochs,
                    opt_func=OptFunc('sgd', weight_decay=5e-4, param_groups=strategy.param_groups), cbs=cbs)
    t0 = time.perf_counter()
    learn.fit()
    return learn, et.times, getattr(ct, 'build', 0.0), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='ViT-B-32', help="an open_clip model name (random init) or 'mini'")
    ap.add_argument('--images', type=int, default=128)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--n-ctx', type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model0 = load_clip('mini', device='cpu')[0] if args.model == 'mini' else random_clip(args.model)
    size = model0.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    classnames = ['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(args.images, 3, *size, generator=g), torch.randint(0, 10, (args.images,), generator=g))
    print(f"{args.model} ({'mini weights' if args.model == 'mini' else 'random init'}, {sum(p.numel() for p in model0.parameters())/1e6:.1f} M params), "
          f"{args.images} images at {size[0]} px, 10 classes, batch 32, {args.epochs} epochs, {args.threads} CPU thread(s)\n")
    without, t_no, _, tot_no = run(model0, args.n_ctx, ds, classnames, args.epochs, False)
    cached, t_c, build, tot_c = run(model0, args.n_ctx, ds, classnames, args.epochs, True)
    la = [r['loss'] for r in without.history if 'batch' in r]
    lb = [r['loss'] for r in cached.history if 'batch' in r]
    diff = max(abs(a - b) for a, b in zip(la, lb))
    ep_no, ep_c = sum(t_no) / len(t_no), sum(t_c) / len(t_c)
    print(f"coop, n_ctx={args.n_ctx} ({count_params(cached.model)[0]:,} trainable parameters), cache used: {cached.cb(FeatureCacheCB).used}")
    print(f"  epoch without cache {ep_no:8.3f} s   with cache {ep_c:8.3f} s   -> {ep_no / ep_c:7.1f}x faster per epoch")
    print(f"  building the cache (once per fit) {build:.3f} s; whole run of {args.epochs} epochs: "
          f"{tot_no:.2f} s without, {tot_c:.2f} s with ({tot_no / tot_c:.1f}x)")
    print(f"  largest per-step loss difference, cache vs no cache: {diff:.2e}")


if __name__ == '__main__': main()
