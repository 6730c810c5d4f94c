"""Benchmark: the Learner's feature cache against no cache, for frozen-image strategies on a ViT-B/32-shaped CLIP.

A randomly initialised `open_clip.create_model('ViT-B-32')` (structure only, no download), `--images` random images at
224 px with 10 classes, batch 32, `--epochs` epochs, measured side by side in one run for each strategy:

* `logit_scale` — only the temperature trains, so both the image and the text features are fixed (temperature scaling);
* `frozen_vision` — the text tower trains, so the class-prompt features are recomputed every step.

Printed per strategy: the time of a training epoch without the cache and with it (the cache is built once in
`before_fit`, so an epoch with the cache is pure reuse), their ratio (target: >= 10x for a frozen-image strategy whose
step is dominated by the image tower), the cache-building time, the end-to-end times of the whole run, and the largest
difference between the per-step losses of the two runs.

    python bench/bench_feature_cache.py [--images 128] [--epochs 2] [--threads 2] [--strategies logit_scale frozen_vision]
"""
import argparse, copy, sys, time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import open_clip
from clip_strategies.models import random_clip
from clip_strategies.callback import Callback
from clip_strategies.optim import OptFunc
from clip_strategies.objectives import TextHeadClassification
from clip_strategies.learner import Learner, dataloaders
from clip_strategies.callbacks import standard_cbs
from clip_strategies.feature_cache import FeatureCacheCB
from clip_strategies.strategy import get_strategy
from clip_strategies.core import count_params


class CacheTimer(Callback):
    "Time spent in the feature cache's `before_fit` (encoding the dataset once)."
    run_before = ('feature_cache',)
    def before_fit(self, learn): self.t0 = time.perf_counter()
    def before_epoch(self, learn):
        if not hasattr(self, 'build'): self.build = time.perf_counter() - self.t0


class EpochTimer(Callback):
    "Wall time of each training phase."
    def before_fit(self, learn): self.times = []
    def before_train(self, learn): self.t0 = time.perf_counter()
    def after_train(self, learn): self.times.append(time.perf_counter() - self.t0)


def run(model0, strategy, ds, tokenizer, classnames, epochs, cache):
    "One fit; returns (learner, epoch times, cache build time, total time)."
    model = strategy.apply(copy.deepcopy(model0))
    et, ct = EpochTimer(), CacheTimer()
    cbs = standard_cbs(progress=False, device='cpu') + strategy.callbacks() + [et, ct] + ([FeatureCacheCB(required=True)] if cache else [])
    learn = Learner(model, dataloaders(ds, batch_size=32, seed=0), TextHeadClassification(tokenizer, classnames), lr=1e-5,
                    epochs=epochs, opt_func=OptFunc(param_groups=strategy.param_groups), cbs=cbs)
    t0 = time.perf_counter()
    learn.fit()
    total = time.perf_counter() - t0
    return learn, et.times, getattr(ct, 'build', 0.0), total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--images', type=int, default=128)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--strategies', nargs='+', default=['logit_scale', 'frozen_vision'])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model0 = random_clip('ViT-B-32')  # random init
    tokenizer = open_clip.get_tokenizer('ViT-B-32')
    classnames = [f'class {i}' for i in range(10)]
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(args.images, 3, 224, 224, generator=g), torch.randint(0, 10, (args.images,), generator=g))
    print(f"ViT-B-32 (random init, {sum(p.numel() for p in model0.parameters())/1e6:.1f} M params), {args.images} images "
          f"at 224 px, batch 32, {args.epochs} epochs, {args.threads} CPU thread(s)\n")
    for name in args.strategies:
        strategy = get_strategy(name)
        without, t_no, _, tot_no = run(model0, strategy, ds, tokenizer, classnames, args.epochs, False)
        cached, t_c, build, tot_c = run(model0, strategy, ds, tokenizer, classnames, args.epochs, True)
        used = cached.cb(FeatureCacheCB).used
        la = [r['loss'] for r in without.history if 'batch' in r]
        lb = [r['loss'] for r in cached.history if 'batch' in r]
        diff = max(abs(a - b) for a, b in zip(la, lb))
        ep_no, ep_c = sum(t_no) / len(t_no), sum(t_c) / len(t_c)
        trainable = count_params(cached.model)[0]
        print(f"strategy {name!r} ({trainable:,} trainable parameters), cache used: {used}")
        print(f"  epoch without cache {ep_no:8.3f} s   with cache {ep_c:8.3f} s   -> {ep_no / ep_c:7.1f}x faster per epoch "
              f"(target >= 10x: {'OK' if ep_no / ep_c >= 10 else 'below'})")
        print(f"  building the cache (once per fit) {build:.3f} s; whole run of {args.epochs} epochs: "
              f"{tot_no:.2f} s without, {tot_c:.2f} s with ({tot_no / tot_c:.1f}x)")
        print(f"  largest per-step loss difference, cache vs no cache: {diff:.2e}\n")


if __name__ == '__main__': main()
