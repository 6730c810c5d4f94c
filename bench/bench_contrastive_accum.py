"""Memory and time of the contrastive loss over a big batch: encoded at once against encoded in micro-batches.

The accumulated loss (`ContrastiveLoss(micro_batch=)`) promises the gradient of one batch of `pairs` with the activation
memory of `micro_batch` pairs, for one extra forward pass. Each measurement runs in a fresh process (peak resident memory
cannot be reset inside one), side by side in this run, and the ratios are printed.

    python bench/bench_contrastive_accum.py                # 512 pairs, micro-batches of 64, the mini CLIP on the CPU
    python bench/bench_contrastive_accum.py --pairs 1024 --micro-batch 128
"""
import argparse, json, resource, subprocess, sys, time

def measure(pairs:int, micro_batch:int|None)->dict:
    "One training step's peak memory above the loaded model, and its seconds (run in this process)."
    import torch
    from types import SimpleNamespace
    from contextlib import nullcontext
    from clip_strategies.models import load_clip
    from clip_strategies.mini import mini_captions
    from clip_strategies.objectives import ContrastiveLoss
    torch.manual_seed(0)
    model, pre, tok = load_clip('mini', device='cpu')
    caps = mini_captions('train', pre)
    xb, yb = torch.stack([caps[i][0] for i in range(pairs)]), [caps[i][1] for i in range(pairs)]
    learn = SimpleNamespace(model=model, fwd_model=model, device=torch.device('cpu'), autocast=nullcontext, xb=xb, yb=yb, training=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    obj, t0 = ContrastiveLoss(tok, micro_batch), time.perf_counter()
    obj.predict(learn); obj.get_loss(learn); learn.loss.backward(); obj.after_backward(learn)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(extra_mib=(peak - base) / 1024, seconds=secs, loss=learn.loss.item())

def in_child(pairs:int, micro_batch:int|None)->dict:
    "`measure` in a fresh Python process."
    out = subprocess.run([sys.executable, __file__, '--child', '--pairs', str(pairs), '--micro-batch', str(micro_batch or 0)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pairs', type=int, default=512, help="pairs in the batch the loss sees")
    ap.add_argument('--micro-batch', type=int, default=64, help="pairs encoded at a time by the accumulated loss")
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: print(json.dumps(measure(a.pairs, a.micro_batch or None))); return
    whole, parts = in_child(a.pairs, None), in_child(a.pairs, a.micro_batch)
    print(f"{a.pairs} pairs at once:          {whole['extra_mib']:7.1f} MiB above the model, {whole['seconds']:.2f} s, loss {whole['loss']:.5f}")
    print(f"{a.pairs} pairs in chunks of {a.micro_batch:>4}: {parts['extra_mib']:7.1f} MiB above the model, {parts['seconds']:.2f} s, loss {parts['loss']:.5f}")
    print(f"memory ratio (chunks / at once) {parts['extra_mib'] / whole['extra_mib']:.2f}; time ratio {parts['seconds'] / whole['seconds']:.2f}")

if __name__ == '__main__': main()
