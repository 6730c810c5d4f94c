"""Time `clip_strategies.abs.unit_angles` on a randomly initialised ViT-B/32 perturbed by noise (target: <= 1 s on CPU).

Run: python bench/bench_abs.py [--threads N] [--repeats R] [--device cpu|cuda]
(--threads 1 by default: comparable on shared CI machines, where multi-threaded torch ops oversubscribe the cores;
--threads 0 keeps torch's default.)
Prints the median time of R runs and the ratio to the 1 s target (ratio < 1 is within target).
"""
import argparse, statistics, time
import torch

TARGET_S = 1.0

def perturbed_vit(seed:int=0, lo:float=1e-4, hi:float=1e-2, device='cpu'):
    "A random ViT-B/32 with non-zero biases, its units and snapshot, then relative noise of size lo..hi per unit."
    from clip_strategies.models import load_clip
    from clip_strategies.abs import abs_units, snapshot
    model, _, _ = load_clip('ViT-B/32', device=device)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any(): p.copy_(torch.randn(p.shape, generator=g).to(p) * 0.02)
    units = abs_units(model, ['q_proj', 'k_proj', 'v_proj'])
    snap = snapshot(model, units)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for u in units:
            part = u.view(params[u.param_name])
            rel = lo * (hi / lo) ** torch.rand((), generator=g)
            part.add_(torch.randn(part.shape, generator=g).to(part) * float(rel) * (part.abs().mean() + 1e-3))
    return model, units, snap

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (0: torch default)')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    from clip_strategies.abs import unit_angles
    model, units, snap = perturbed_vit(device=a.device)
    n = sum(u.view(snap[u.param_name]).numel() for u in units)
    sync = (lambda: torch.cuda.synchronize()) if a.device.startswith('cuda') else (lambda: None)
    unit_angles(model, snap, units); sync()  # warm-up
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter(); ang = unit_angles(model, snap, units); sync(); times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f'unit_angles on ViT-B/32 ({len(units)} units, {n:,} parameters, device {a.device}, '
          f'{torch.get_num_threads()} CPU threads): median {med:.3f} s over {a.repeats} runs '
          f'(min {min(times):.3f}, max {max(times):.3f}); angles {float(ang.min()):.1e}..{float(ang.max()):.1e} rad')
    print(f'ratio to the {TARGET_S:.0f} s target: {med / TARGET_S:.2f} ({"within" if med <= TARGET_S else "OVER"} target)')

if __name__ == '__main__': main()
