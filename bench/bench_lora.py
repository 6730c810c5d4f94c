"""Benchmark: LoRA on open_clip's packed attention — ours (`clip_strategies.adapter`) against Hugging Face PEFT.

On a ViT-B/32-shaped CLIP (`random_clip('ViT-B-32')`: the real architecture, random weights) with a small batch:

(a) inference of the merged LoRA model (`merge_lora`: a plain open_clip model again) against the base model, same
    inputs; the expected ratio is 1.00 (it is the same computation): the bench checks that the merged model has the
    base model's module classes, parameter layouts, dtypes and `requires_grad` flags, and exits non-zero when
    merged / base exceeds 1.05 in both wall and CPU time (over it, base and merged are timed once more, alone, with
    twice the rounds, and that measurement decides: a busy machine moves single ratios by several percent). Beside them runs the base model with every tensor frozen
    (what `merge_lora` left before it gave the flags back): frozen weights send the text tower's attention (float causal
    mask, so not PyTorch's fused path) from one `mm` to a broadcast `bmm` for each in-projection;
(b) ours against PEFT's LoRA on `nn.MultiheadAttention` (PEFT >= 0.15), the same matrices adapted: PEFT adapts the
    whole packed `in_proj_weight` (one A, one B of 3d rows) and `out_proj` together, so ours runs with
    targets q, k, v, o. PEFT's update is copied across (A_q = A_k = A_v = PEFT's A, B_q, B_k, B_v = its B's three row
    blocks; o one to one) and both must give the same outputs for q, k, v (PEFT 0.21 applies the out_proj update twice
    in its forward, which the bench detects and reports). Then the training-step time (forward,
    contrastive loss, backward, AdamW step) of each, LoRA dropout 0 on both (PEFT cannot apply dropout on a merged
    weight). PEFT merges the update into the packed weights before every attention call and unmerges after it; ours
    adds the low-rank products to the projections.

Timings alternate between the sides in rounds; each ratio is the median over rounds of the two sides' times in the same
round (robust to a machine whose load changes), measured side by side in one run, in wall time and in CPU time of
this process (less sensitive to other processes on a shared machine).

    python bench/bench_lora.py [--batch 2] [--steps 1] [--rounds 9] [--train-rounds 5] [--rank 2] [--threads 2]
"""
import argparse, copy, os, statistics, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_strategies.models import random_clip
from clip_strategies.adapter import merge_lora
from clip_strategies.anatomy import holds
from clip_strategies.strategy import get_strategy
from clip_strategies.core import count_params


MERGED_MAX = 1.05  # merged / base above this (wall and CPU time both) fails the bench


def signature(model):
    "What decides how a model computes besides its numbers: module classes and settings, parameter layouts and flags."
    def plain(v): return isinstance(v, (bool, int, float, str, type(None)))
    mods = [(n, type(m).__name__, sorted((k, v) for k, v in vars(m).items() if plain(v) and (not k.startswith('_') or k == '_qkv_same_embed_dim')),
             len(m._forward_hooks) + len(m._forward_pre_hooks)) for n, m in model.named_modules()]
    return mods, [(n, tuple(p.shape), p.stride(), p.dtype, p.requires_grad) for n, p in model.named_parameters()]


def load_line()->str:
    "The machine's 1-minute load average against its cores (other processes blur the ratios)."
    load, cores = os.getloadavg()[0], os.cpu_count()
    return f"load average {load:.2f} on {cores} cores" + ('  (busy: other processes share the cores)' if load > 0.5 * cores else '')


def peft_lora(model, rank, alpha):
    "PEFT's LoRA injected in place into every attention of both towers (scaling alpha/sqrt(r): rsLoRA, as ours)."
    from peft import LoraConfig, inject_adapter_in_model
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, use_rslora=True, target_modules=r'.*resblocks\.\d+\.attn')
    model = inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters(): p.requires_grad_('lora_' in n)
    return model


def ours_lora(model, rank, alpha):
    "Ours with the matrices PEFT adapts: q, k, v and the output projection; dropout 0."
    get_strategy('lora', rank=rank, alpha=alpha, dropout=0.0, targets=['q', 'k', 'v', 'o']).apply(model)
    return model


def copy_peft_to_ours(peft_model, ours):
    "Give ours exactly PEFT's update: A shared by q, k, v, B split in three row blocks; o copied."
    pm = dict(peft_model.named_modules())
    with torch.no_grad():
        for name, m in ours.named_modules():
            if not holds(m, 'lora'): continue  # an adaptable attention (anatomy) with LoRA's updates, `m.lora[t]`
            p = pm[name]
            a, b = p.lora_A['default'].weight, p.lora_B['default'].weight  # [r, d], [3d, r]
            for t, bt in zip('qkv', b.chunk(3)): m.lora[t].lora_A.copy_(a); m.lora[t].lora_B.copy_(bt)
            o = p.base_layer.out_proj
            m.lora['o'].lora_A.copy_(o.lora_A['default'].weight); m.lora['o'].lora_B.copy_(o.lora_B['default'].weight)


def step_fn(model, images, tokens):
    "One training step: forward, contrastive loss, backward, AdamW step."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    labels = torch.arange(len(images))
    def step():
        img, txt, scale = model(images, tokens)
        logits = scale * img @ txt.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return step


def infer_fn(model, images, tokens):
    "One inference forward pass (no gradients)."
    def infer():
        with torch.no_grad(): model(images, tokens)
    return infer


def timed(fn, n):
    "Median wall time and median CPU time of this process (all its threads) over `n` calls of `fn`."
    ts, cs = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time(); fn()
        ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs)


def compare(fns, steps, rounds, warm=1):
    "Per-side median times and, for each side, the median over rounds of its time / the first side's in the same round."
    for f in fns.values():
        for _ in range(warm): f()
    per = {k: [] for k in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate, so neither side always runs first
        for k in order: per[k].append(timed(fns[k], steps))
    ref = list(fns)[0]
    def ratio(k, i): return statistics.median(a[i] / b[i] for a, b in zip(per[k], per[ref]))
    return ({k: statistics.median(x[0] for x in v) for k, v in per.items()},
            {k: (ratio(k, 0), ratio(k, 1)) for k in fns})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch', type=int, default=2, help='images (and captions) per step')
    ap.add_argument('--steps', type=int, default=1, help='timed calls per side per round')
    ap.add_argument('--rounds', type=int, default=9, help='inference rounds, the sides alternating')
    ap.add_argument('--train-rounds', type=int, default=5, help='training rounds, the sides alternating')
    ap.add_argument('--rank', type=int, default=2)
    ap.add_argument('--alpha', type=float, default=1.0)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import peft
    print(f'torch {torch.__version__}, peft {peft.__version__}, {args.threads} threads, ViT-B/32 shape (random weights), '
          f'batch {args.batch}, rank {args.rank}, alpha {args.alpha}')
    print(load_line())

    torch.manual_seed(0)
    base = random_clip('ViT-B-32').eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 224, 224, generator=g)
    tokens = base.tokenizer([f'a photo of thing number {i}' for i in range(args.batch)])

    # the same update on both sides: PEFT's, made non-zero, copied into ours
    pm = peft_lora(copy.deepcopy(base), args.rank, args.alpha).eval()
    ours = ours_lora(copy.deepcopy(base), args.rank, args.alpha).eval()
    def outs(m):
        with torch.no_grad(): return torch.cat(m(images, tokens)[:2])
    def set_peft_B(out_proj:bool):
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))) * 0.02 if out_proj or 'out_proj' not in n else 0)
        copy_peft_to_ours(pm, ours)
    out_b = outs(base)
    set_peft_B(out_proj=False)  # q, k, v (the packed in_proj) only
    diff, moved = (outs(pm) - outs(ours)).abs().max().item(), (outs(pm) - out_b).abs().max().item()
    print(f'same update of q, k, v: max |PEFT - ours| = {diff:.1e} (the update moves the outputs by {moved:.1e})')
    assert diff < 1e-5 and moved > 1e-3, (diff, moved)
    set_peft_B(out_proj=True)  # and the output projection
    once = (outs(pm) - outs(ours)).abs().max().item()
    with torch.no_grad():
        for m in ours.modules():
            if holds(m, 'lora'): m.lora['o'].lora_B.mul_(2)
    twice = (outs(pm) - outs(ours)).abs().max().item()
    print(f'same update of q, k, v and out_proj: max |PEFT - ours| = {once:.1e}; against ours with the out_proj update '
          f'doubled: {twice:.1e}' + ('  -> this PEFT applies the out_proj update twice in its forward (merge() adds it, '
          'then out_proj.merge() adds it again; huggingface/peft PR #3774)' if twice < 1e-5 < once else ''))
    print(f'trainable parameters: ours {count_params(ours)[0]:,} (q, k, v, o each rank {args.rank}), '
          f'PEFT {count_params(pm)[0]:,} (packed in_proj rank {args.rank} + out_proj)')
    out_o = outs(ours)

    # (a) merged inference against the base model
    merged = merge_lora(copy.deepcopy(ours)).eval()
    with torch.no_grad(): mdiff = (torch.cat(merged(images, tokens)[:2]) - out_o).abs().max().item()
    assert mdiff < 1e-4 and not any(holds(m, 'lora') for m in merged.modules()), mdiff
    same = signature(merged) == signature(base)
    print(f"merged vs base: module classes and settings, parameter layouts, dtypes and requires_grad "
          f"{'identical' if same else 'DIFFERENT'}")
    frozen = copy.deepcopy(base).requires_grad_(False)
    t, q = compare({'base': infer_fn(base, images, tokens), 'merged': infer_fn(merged, images, tokens),
                    'ours unmerged': infer_fn(ours, images, tokens), 'PEFT unmerged': infer_fn(pm, images, tokens),
                    'base frozen': infer_fn(frozen, images, tokens)},
                   args.steps, args.rounds)
    print(f"(a) inference, median s per call: " + ', '.join(f'{k} {v:.3f}' for k, v in t.items()))
    print(f"    merged / base = {q['merged'][0]:.2f} wall, {q['merged'][1]:.2f} CPU   (medians of per-round ratios; "
          f"merged vs unmerged outputs: {mdiff:.1e})")
    print(f"    unmerged / base: ours {q['ours unmerged'][0]:.2f} wall, {q['ours unmerged'][1]:.2f} CPU; "
          f"PEFT {q['PEFT unmerged'][0]:.2f} wall, {q['PEFT unmerged'][1]:.2f} CPU")
    print(f"    base frozen / base: {q['base frozen'][0]:.2f} wall, {q['base frozen'][1]:.2f} CPU   (the same weights, "
          f"requires_grad off: what a merged model left frozen costs)")
    failures = [] if same else ['the merged model differs from the base model in modules, layouts, dtypes or flags']
    ratio = q['merged']
    if min(ratio) > MERGED_MAX:  # one more look before failing: the two sides alone, twice the rounds
        ratio = compare({'base': infer_fn(base, images, tokens), 'merged': infer_fn(merged, images, tokens)},
                        args.steps, 2 * args.rounds)[1]['merged']
        print(f"    over {MERGED_MAX}: base and merged alone, {2 * args.rounds} rounds: merged / base = {ratio[0]:.2f} wall, "
              f"{ratio[1]:.2f} CPU; {load_line()}")
    if min(ratio) > MERGED_MAX:
        failures.append(f"merged / base = {ratio[0]:.2f} wall, {ratio[1]:.2f} CPU, over {MERGED_MAX}: "
                        f"the merged model is meant to be the base model's computation")

    # (b) training step, ours against PEFT
    pm.train(); ours.train()
    t, q = compare({'PEFT': step_fn(pm, images, tokens), 'ours': step_fn(ours, images, tokens)}, args.steps, args.train_rounds)
    print(f"(b) training step, median s: ours {t['ours']:.3f}, PEFT {t['PEFT']:.3f}; ours / PEFT = {q['ours'][0]:.2f} wall, "
          f"{q['ours'][1]:.2f} CPU (medians of per-round ratios)")
    if failures: sys.exit('FAILED: ' + '; '.join(failures))


if __name__ == '__main__':
    main()
