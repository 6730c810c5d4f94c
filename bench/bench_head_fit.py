"""Benchmark: each training-free / head-only method's whole fit against the image-encoding passes it cannot avoid.

Tip-Adapter, Tip-Adapter-F, the linear probe, ZS-LP (`zs_linear`) and GDA never back-propagate through CLIP: they encode
the images and fit on features. Their cost floor is the encoding itself: one pass over each split (train and val), and
for Tip/Tip-F `augment_epoch` passes over the training split for the cache (Tip's keys are averages of augmented passes;
its val pass is the plain one). Measured side by side in one run, on one frozen model (`random_clip(--model)`, structure
only, random weights, its tokenizer attached), `--shots` x `--classes` random `--size` px training images and `min(shots,
4)` x classes validation images (the few-shot split's convention), both in memory with `classnames` and `templates`:

- the floor: the time of one plain encoding pass of train and of val (`image_features`, batch `--batch`), and
  floor(method) = passes over train x train pass + val pass;
- each method's whole `strategy.fit(model, tokenizer, splits)`: encodings, augmentation, text weights, the alpha/beta or
  C or blend search, key fine-tuning, all included.

The floor is measured before the fits and again after them (the faster of the two is used: on a shared machine the load
drifts). Printed per method: fit time, floor, the overhead (fit - floor), fit/floor (the issue's target: at most 1.2 for `tip` and `gda`, search included;
reported for the others) and what the fit found. The class-prompt text encoding is timed apart (it is not in the floor).

    python bench/bench_head_fit.py [--model ViT-B-32] [--shots 16] [--classes 10] [--augment-epoch 1] [--threads 2]
                                   [--methods tip,tip_f,linear_probe,gda,zs_linear]
"""
import argparse, sys, time
from pathlib import Path

import torch
from torch.utils.data import Dataset, DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.models import random_clip, load_clip
from clip_strategies.strategy import get_strategy
from clip_strategies.zeroshot import image_features, class_text_features
import clip_strategies.tip, clip_strategies.linear_probe  # register tip, tip_f, linear_probe, zs_linear, gda


class MemoryDataset(Dataset):
    "Image tensors with integer labels, `classnames` and `templates`, as `clip_strategies.data` datasets carry them."
    def __init__(self, images, labels, classnames, templates):
        self.images, self.labels, self.classnames, self.templates = images, labels, list(classnames), list(templates)
    def __len__(self): return len(self.images)
    def __getitem__(self, i): return self.images[i], int(self.labels[i])


def make_split(per_class, n_cls, size, classnames, seed):
    "`per_class` random images of each class."
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_cls).repeat_interleave(per_class)
    return MemoryDataset(torch.randn(len(labels), 3, size, size, generator=g), labels, classnames, ['a photo of a {}.'])


def timed(f):
    "(seconds, result) of one call."
    t0 = time.perf_counter(); r = f(); return time.perf_counter() - t0, r


def found(s):
    "What the fit chose, in a few words: the plain values of the strategy's fitted state (no tensors, no class names)."
    plain = {k: v for k, v in s.fitted_state().items() if not torch.is_tensor(v) and k not in ('classnames', 'found')}
    plain |= {k: v for k, v in (s.fitted_state().get('found') or {}).items()}  # Tip: alpha and beta after the search
    return ', '.join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in plain.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='ViT-B-32', help="an open_clip model name (random init) or 'mini'")
    ap.add_argument('--shots', type=int, default=16)
    ap.add_argument('--classes', type=int, default=10)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--augment-epoch', type=int, default=1, help="Tip's augmented passes (the released default is 10)")
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--methods', default='tip,tip_f,linear_probe,gda,zs_linear')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_clip('mini', device='cpu')[0] if args.model == 'mini' else random_clip(args.model)
    model = get_strategy('gda').apply(model).eval()  # frozen, as every one of these methods leaves it
    tok = model.tokenizer
    size = args.size if args.model != 'mini' else model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    names = [f"class {i}" for i in range(args.classes)]
    train = make_split(args.shots, args.classes, size, names, 0)
    val = make_split(min(args.shots, 4), args.classes, size, names, 1)
    splits = dict(train=train, val=val)
    print(f"{args.model} ({'mini weights' if args.model == 'mini' else 'random init'}, "
          f"{sum(p.numel() for p in model.parameters())/1e6:.1f} M params), train {len(train)} / val {len(val)} images at "
          f"{size} px, {args.classes} classes, batch {args.batch}, augment_epoch {args.augment_epoch}, {args.threads} CPU thread(s)\n")

    enc = lambda ds: timed(lambda: image_features(model, DataLoader(ds, batch_size=args.batch)))[0]
    enc(val)  # warm-up (first-call allocations), not timed
    t_train, t_val = enc(train), enc(val)
    t_text = timed(lambda: class_text_features(model, tok, names, train.templates))[0]
    print(f"floor: one encoding pass of train {t_train:.2f} s ({t_train / len(train) * 1e3:.0f} ms/image), of val {t_val:.2f} s; "
          f"class-prompt text encoding {t_text:.3f} s (not in the floor)\n")

    rows = []
    for name in args.methods.split(','):
        opts = dict(augment_epoch=args.augment_epoch) if name in ('tip', 'tip_f') else {}
        s = get_strategy(name, **opts)
        s.apply(model)
        t_fit, _ = timed(lambda: s.fit(model, tok, splits, batch_size=args.batch))
        passes = max(1, args.augment_epoch) if name in ('tip', 'tip_f') else 1
        rows.append((name, passes, t_fit, found(s)))
        print(f"  fitted {name} in {t_fit:.2f} s", flush=True)
    t_train2, t_val2 = enc(train), enc(val)  # the floor again after the fits: the machine's load drifts
    print(f"floor again after the fits: train {t_train2:.2f} s, val {t_val2:.2f} s; the floor below uses the faster of the two\n")
    t_train, t_val = min(t_train, t_train2), min(t_val, t_val2)
    print(f"{'method':<13} {'passes':>6} {'fit s':>8} {'floor s':>8} {'over s':>7} {'fit/floor':>9}  found")
    for name, passes, t_fit, what in rows:
        floor = passes * t_train + t_val
        print(f"{name:<13} {passes:>6} {t_fit:>8.2f} {floor:>8.2f} {t_fit - floor:>7.2f} {t_fit / floor:>8.2f}x  {what}")


if __name__ == '__main__': main()
