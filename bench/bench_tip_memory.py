"""Benchmark: Tip-Adapter's memory against the shots, with the per-image cache and with `NEW` (a fixed-size cache).

The per-image cache (`clip_strategies.tip.TipAdapter`) holds one key per training image and its one-hot label, so it grows
linearly with the shots (and with every dataset merged in by `NEW_DATASET`). `NEW` (`slot_adapter(*slot_cache(...,
cache_size))`, the original tool's `TRAINER.TIP.NEW`) keeps `cache_size` slots of class prototypes whatever the shots.
No model is needed: keys and text weights are random normalised features of the right shapes. Measured in one run,
for each number of shots in `--shots`, on a ViT-B/32-shaped problem (D=512, 10 classes) and an ImageNet-shaped one
(`--imagenet-dim`, default 1024 = RN50, Tip-Adapter's ImageNet backbone; 1000 classes):

- the fitted adapter's memory: `numel() * element_size()` over the module's parameters and buffers (cache keys `[M, D]`,
  cache values `[M, C]`, text weights `[C, D]`; for `NEW` M = `cache_size`), for both, and their ratio;
- the cache file on disk (`save_cache` into a temporary folder): one key, one label and one source (its dataset) per
  image **in both cases** — the file stays per-image by design, so that `NEW_DATASET` merges stay exact (slots are
  computed from it at fit time);
- the peak memory allocated by one forward pass on a batch of `--batch` normalised features (torch's CPU profiler with
  `profile_memory`: the running sum of its allocations and frees). For a large cache the `[N, M]` affinities and their
  exponential dominate (2·N·M·4 bytes); for a small one the floor is `100. * f` (`[N, D]`, computed before `@ Wᵀ`) and the
  `[N, C]` logits, the same for both adapters.

With fewer classes than slots, NEW keeps `cache_size - C` empty (zero) slots: on 10 classes it is *larger* than the
per-image cache below `cache_size / C` = 10 shots (ratio < 1 in the first table); it pays off from there on.

Then `NEW_DATASET`-style growth, merged for real with `merge_cache` into one file: `--datasets` (cumulative counts) datasets
of 10 classes and `--merge-shots` shots each (D=512), both with distinct classes (the adapter over the union of the merged
classes) and with the same 10 classes in every dataset (more keys per class; the adapter a run over those classes gets).
NEW's keys stay `cache_size x D` as long as the classes fit in the slots (beyond, classes share slots); its values
`cache_size x C` and the text weights `C x D` grow with the classes only. Note that a real `NEW_DATASET` run reads only its
own classes from the merged file (`select_classes`), so its adapter does not see the other datasets' classes.

    OMP_NUM_THREADS=1 python bench/bench_tip_memory.py [--shots 1,2,4,8,16] [--imagenet-dim 1024] [--cache-size 100]
                                                       [--datasets 1,2,4,16] [--merge-shots 16] [--batch 256]
"""
import argparse, os, sys, tempfile, time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.tip import TipAdapter, slot_cache, slot_adapter, cache_meta, save_cache, merge_cache, select_classes


def unit(n, dim, g):
    "`n` random unit vectors of `dim` numbers."
    return F.normalize(torch.randn(n, dim, generator=g), dim=-1)


def problem(n_cls, shots, dim, seed=0):
    "Text weights `[C, D]`, per-image keys `[C*shots, D]` and their labels."
    g = torch.Generator().manual_seed(seed)
    return unit(n_cls, dim, g), unit(n_cls * shots, dim, g), torch.arange(n_cls).repeat_interleave(shots)


def tensor_bytes(module):
    "Bytes of each parameter and buffer of `module`, by name."
    return {n: t.numel() * t.element_size() for n, t in [*module.named_parameters(), *module.named_buffers()]}


def adapters(text, keys, labels, cache_size):
    "The per-image adapter and the NEW one (slots) on the same cache."
    return TipAdapter(text, keys, labels), slot_adapter(text, *slot_cache(keys, labels, len(text), cache_size))


@contextmanager
def quiet_stderr():
    "Silence file descriptor 2 (the profiler's native start/stop and no-GPU lines)."
    sys.stderr.flush(); saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try: yield
    finally: os.dup2(saved, 2); os.close(saved); os.close(null)


def forward_peak(adapter, feats):
    "Peak bytes allocated during `adapter(feats)` (output included), from the CPU profiler's memory events."
    with torch.no_grad(), quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        adapter(feats)
    events = sorted((e.start_ns(), e.nbytes()) for e in p.profiler.kineto_results.events() if e.name() == '[memory]')
    peak = now = 0
    for _, b in events: now += b; peak = max(peak, now)
    return peak


def file_bytes(path, keys, labels, classnames, shots, dim):
    "Size on disk of the cache file `save_cache` writes."
    save_cache(path, keys, labels, cache_meta('bench', classnames, shots, 0, dim))
    return os.path.getsize(path)


def human(b):
    "Bytes as B / KiB / MiB / GiB."
    for u in ('B', 'KiB', 'MiB', 'GiB'):
        if b < 1024 or u == 'GiB': return f"{b:.0f} {u}" if u == 'B' else f"{b:.1f} {u}"
        b /= 1024


def shots_table(name, n_cls, dim, shots_list, cache_size, batch, tmp):
    "One setting: memory, file and forward peak of both adapters for each number of shots."
    print(f"\n{name}: D={dim}, {n_cls} classes, cache_size={cache_size}, forward batch {batch}")
    print(f"{'shots':>5} {'keys M':>7} | {'per-image: keys':>15} {'values':>10} {'text':>10} {'total':>10} | "
          f"{'NEW: keys':>10} {'values':>10} {'total':>10} | {'img/NEW':>8} | {'cache file':>10} | "
          f"{'fwd peak img':>12} {'fwd peak NEW':>12} {'img/NEW':>8}")
    feats = unit(batch, dim, torch.Generator().manual_seed(1))
    for s in shots_list:
        text, keys, labels = problem(n_cls, s, dim)
        img, new = adapters(text, keys, labels, cache_size)
        bi, bn = tensor_bytes(img), tensor_bytes(new)
        ti, tn = sum(bi.values()), sum(bn.values())
        fb = file_bytes(tmp / f'{name}_{s}.safetensors', keys, labels, [f'c{i}' for i in range(n_cls)], s, dim)
        pi, pn = forward_peak(img, feats), forward_peak(new, feats)
        print(f"{s:>5} {len(keys):>7} | {human(bi['cache_keys']):>15} {human(bi['cache_values']):>10} {human(bi['text_weights']):>10} "
              f"{human(ti):>10} | {human(bn['cache_keys']):>10} {human(bn['cache_values']):>10} {human(tn):>10} | {ti/tn:>7.2f}x | "
              f"{human(fb):>10} | {human(pi):>12} {human(pn):>12} {pi/pn:>7.2f}x")
        del img, new, text, keys, labels


def merge_table(counts, shots, dim, cache_size, batch, tmp, n_cls=10):
    "NEW_DATASET growth: datasets merged into one file with `merge_cache`; both adapters after each count in `counts`."
    feats = unit(batch, dim, torch.Generator().manual_seed(1))
    print(f"\nNEW_DATASET growth: datasets of {n_cls} classes x {shots} shots merged with merge_cache (D={dim}, "
          f"cache_size={cache_size}; * = more classes than slots, classes share slots)")
    print(f"{'classes':>8} {'datasets':>8} {'C':>5} {'file keys':>9} {'cache file':>10} | {'per-image total':>15} | "
          f"{'NEW: keys':>10} {'values':>10} {'text':>10} {'total':>10} | {'img/NEW':>8} | {'fwd peak img':>12} {'fwd peak NEW':>12}")
    for kind in ('distinct', 'same'):
        path, g = tmp / f'merged_{kind}.safetensors', torch.Generator().manual_seed(2)
        for d in range(1, max(counts) + 1):
            names = [f'd{d}_c{i}' if kind == 'distinct' else f'c{i}' for i in range(n_cls)]
            keys, labels = unit(n_cls * shots, dim, g), torch.arange(n_cls).repeat_interleave(shots)
            meta = cache_meta('bench', names, shots, 0, dim, dataset=f'd{d}')  # one name per dataset: a merge of the same name replaces it
            if d == 1: save_cache(path, keys, labels, meta); k, l, all_names = keys, labels, names
            else: k, l, all_names, _ = merge_cache(path, keys, labels, meta)
            if d not in counts: continue
            run_names = all_names if kind == 'distinct' else names
            rk, rl = select_classes(k, l, all_names, run_names)
            text = unit(len(run_names), dim, torch.Generator().manual_seed(3))
            img, new = adapters(text, rk, rl, cache_size)
            bi, bn = tensor_bytes(img), tensor_bytes(new)
            ti, tn = sum(bi.values()), sum(bn.values())
            star = '*' if len(run_names) > cache_size else ' '
            print(f"{kind:>8} {d:>8} {len(run_names):>4}{star} {len(k):>9} {human(os.path.getsize(path)):>10} | {human(ti):>15} | "
                  f"{human(bn['cache_keys']):>10} {human(bn['cache_values']):>10} {human(bn['text_weights']):>10} {human(tn):>10} | "
                  f"{ti/tn:>7.2f}x | {human(forward_peak(img, feats)):>12} {human(forward_peak(new, feats)):>12}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--shots', default='1,2,4,8,16', help="shots per class, comma-separated (32,64 work too: about 2.4 GB peak RSS at 64-shot ImageNet)")
    ap.add_argument('--imagenet-dim', type=int, default=1024, help="feature dimension of the ImageNet-shaped setting (512: ViT-B)")
    ap.add_argument('--cache-size', type=int, default=100, help="NEW's slots (the original tool's CACHE_SIZE default)")
    ap.add_argument('--datasets', default='1,2,4,16', help="merged dataset counts for the NEW_DATASET table (cumulative)")
    ap.add_argument('--merge-shots', type=int, default=16)
    ap.add_argument('--batch', type=int, default=256, help="features in the forward pass whose peak memory is measured")
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shots = [int(s) for s in args.shots.split(',')]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shots_table('ViT-B/32-shaped', 10, 512, shots, args.cache_size, args.batch, tmp)
        shots_table('ImageNet-shaped', 1000, args.imagenet_dim, shots, args.cache_size, args.batch, tmp)
        merge_table(sorted({int(c) for c in args.datasets.split(',')}), args.merge_shots, 512, args.cache_size, args.batch, tmp)
    print(f"\n(adapter memory: float32 parameters + buffers; cache file: float32 keys + int64 labels and sources + header; "
          f"{time.perf_counter() - t0:.1f} s)")


if __name__ == '__main__': main()
