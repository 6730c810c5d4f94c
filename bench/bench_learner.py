"""Benchmark: one training step through the `Learner` against a bare hand-written loop, same model and batches.

Both sides run the same work per step: forward of images and class prompts, text-head cross-entropy, backward,
gradient clipping (norm 1.0), AdamW step, cosine schedule, logit-scale clamp, zero_grad. The Learner adds its callbacks
(history, running metrics, non-finite check, progress bar when asked) and accelerate. Runs are interleaved and the
median per-step time of each side is compared; the target is a ratio <= 1.05.

    python bench/bench_learner.py [--steps 30] [--rounds 5] [--batch 32] [--threads 1] [--progress]
"""
import argparse, copy, math, statistics, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.anatomy import text_trimmable, trim_tokens, encode_text_trimmed
from clip_strategies.callback import Callback
from clip_strategies.optim import OptFunc, default_param_groups, scheduled_lr
from clip_strategies.objectives import TextHeadClassification
from clip_strategies.learner import Learner, DataLoaders
from clip_strategies.callbacks import standard_cbs


def get_model(size):
    "The mini CLIP when it exists (and its image size), else a small open_clip CLIP built here."
    try:
        from clip_strategies.models import load_clip
        model, _, tok = load_clip('mini', device='cpu')
        return model, tok, model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    except Exception as e:
        print(f'(mini CLIP unavailable: {type(e).__name__}: {e}; using a small open_clip CLIP)')
        from open_clip.model import CLIP, CLIPVisionCfg, CLIPTextCfg
        torch.manual_seed(0)
        model = CLIP(embed_dim=128, vision_cfg=CLIPVisionCfg(layers=4, width=192, patch_size=8, image_size=size, head_width=64),
                     text_cfg=CLIPTextCfg(context_length=32, vocab_size=1000, width=192, heads=3, layers=4))
        def tok(texts):
            out = torch.zeros(len(texts), 32, dtype=torch.long)
            for i, t in enumerate(texts):
                ids = [1] + [2 + sum(map(ord, w)) % 900 for w in t.split()] + [999]
                out[i, :len(ids)] = torch.tensor(ids)
            return out
        return model.eval(), tok, size


class StepTimer(Callback):
    "Timestamps after every training batch."
    run_last = True
    def before_fit(self, learn): self.times = []
    def after_batch(self, learn):
        if learn.training: self.times.append((time.perf_counter(), time.process_time()))


def steady(times, warm):
    "Per-step (median wall, median CPU, fastest wall) time after `warm` warm-up steps."
    d = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(times[warm:], times[warm + 1:])]
    return statistics.median(x for x, _ in d), statistics.median(c for _, c in d), min(x for x, _ in d)


def bare_loop(model, dl, tokens, n_cls, n_tpl, lr, wd, epochs, max_norm=1.0, trim=True):
    "The hand-written reference: same math, no callbacks, no accelerate (`trim`: text on the prompt positions, as the Learner)."
    if trim: tokens = trim_tokens(tokens)
    groups = default_param_groups(model, lr, wd)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    total, t, times = epochs * len(dl), 0, []
    params = [p for g in groups for p in g['params']]
    for g in opt.param_groups: g['initial_lr'] = g['lr']
    model.train()
    for _ in range(epochs):
        for xb, yb in dl:
            if trim:
                img, _, scale = model(xb, None)
                txt = encode_text_trimmed(model, tokens)
            else: img, txt, scale = model(xb, tokens)
            txt = F.normalize(txt.view(n_cls, n_tpl, -1).mean(1), dim=-1)
            loss = F.cross_entropy(scale * img @ txt.t(), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            opt.step()
            t += 1
            for g in opt.param_groups: g['lr'] = scheduled_lr(t, g['initial_lr'], total)
            with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100))
            opt.zero_grad(set_to_none=True)
            times.append((time.perf_counter(), time.process_time()))
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=30, help='training steps per run')
    ap.add_argument('--rounds', type=int, default=5, help='interleaved rounds (learner, bare)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--size', type=int, default=64, help='image size of the fallback model')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--progress', action='store_true', help='show the progress bar (measures its cost too)')
    ap.add_argument('--frozen-text', action='store_true', help='freeze the text side (text features computed once)')
    ap.add_argument('--naive', action='store_true', help='bare loop encodes the full padded context (the Learner trims it)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model0, tok, size = get_model(args.size)
    classnames = [f'class{i}' for i in range(10)]
    templates = ['a photo of a {}.', 'a picture of a {}.']
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    ds = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
    if args.frozen_text:
        for nm, p in model0.named_parameters():
            if not nm.startswith('visual.') and nm != 'logit_scale': p.requires_grad_(False)
    tokens = tok([t.format(c) for c in classnames for t in templates])
    warm = 3
    lt, bt = [], []
    for r in range(args.rounds):
        m = copy.deepcopy(model0)
        dl = DataLoader(ds, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(r))
        timer = StepTimer()
        learn = Learner(m, DataLoaders(dl), TextHeadClassification(tok, classnames, templates), lr=1e-5, epochs=1,
                        opt_func=OptFunc('adamw', weight_decay=0.1), cbs=standard_cbs(progress=args.progress, device='cpu') + [timer])
        learn.fit()
        lt.append(steady(timer.times, warm))
        m = copy.deepcopy(model0)
        dl = DataLoader(ds, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(r))
        if args.frozen_text:  # the bare loop gets the same shortcut the Learner takes: text features once
            with torch.no_grad():
                txt = F.normalize(m(None, tokens)[1].view(10, 2, -1).mean(1), dim=-1)
            times = bare_frozen(m, dl, txt, 1e-5, 0.1, 1)
        else: times = bare_loop(m, dl, tokens, 10, 2, 1e-5, 0.1, 1, trim=text_trimmable(m) and not args.naive)
        bt.append(steady(times, warm))
        print(f'round {r}: wall learner {lt[-1][0]*1e3:.2f} / bare {bt[-1][0]*1e3:.2f} ms/step (ratio {lt[-1][0]/bt[-1][0]:.3f}); '
              f'CPU learner {lt[-1][1]*1e3:.2f} / bare {bt[-1][1]*1e3:.2f} ms/step (ratio {lt[-1][1]/bt[-1][1]:.3f})')
    L, B = statistics.median(t[0] for t in lt), statistics.median(t[0] for t in bt)
    Lc, Bc = statistics.median(t[1] for t in lt), statistics.median(t[1] for t in bt)
    Lm, Bm = min(t[2] for t in lt), min(t[2] for t in bt)
    trainable = sum(p.numel() for p in model0.parameters() if p.requires_grad)
    print(f'\nmodel: {type(model0).__name__} ({sum(p.numel() for p in model0.parameters())/1e6:.2f} M params, '
          f'{trainable/1e6:.2f} M trainable), batch {args.batch} at {size}px, {args.threads} thread(s), '
          f'progress bar {"on" if args.progress else "off"}, text side {"frozen" if args.frozen_text else "trains"}'
          + (', bare loop untrimmed' if args.naive else ''))
    print(f'median per step, wall clock: learner {L*1e3:.2f} ms, bare loop {B*1e3:.2f} ms -> ratio {L/B:.3f}')
    print(f'median per step, CPU time:   learner {Lc*1e3:.2f} ms, bare loop {Bc*1e3:.2f} ms -> ratio {Lc/Bc:.3f}')
    print(f'fastest step, wall clock:    learner {Lm*1e3:.2f} ms, bare loop {Bm*1e3:.2f} ms -> ratio {Lm/Bm:.3f}')
    print(f'(target <= 1.05; on a busy machine the wall-clock median is noise, trust the CPU time and the fastest step)')


def bare_frozen(model, dl, txt, lr, wd, epochs, max_norm=1.0):
    "The hand-written reference when the text side is frozen: image forward only."
    groups = default_param_groups(model, lr, wd)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    total, t, times = epochs * len(dl), 0, []
    params = [p for g in groups for p in g['params']]
    for g in opt.param_groups: g['initial_lr'] = g['lr']
    model.train()
    for _ in range(epochs):
        for xb, yb in dl:
            img, _, scale = model(xb, None)
            loss = F.cross_entropy(scale * img @ txt.t(), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            opt.step()
            t += 1
            for g in opt.param_groups: g['lr'] = scheduled_lr(t, g['initial_lr'], total)
            with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100))
            opt.zero_grad(set_to_none=True)
            times.append((time.perf_counter(), time.process_time()))
    return times


if __name__ == '__main__': main()
