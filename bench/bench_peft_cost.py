"""What a training step costs with each parameter-efficient strategy, against full fine-tuning, on a ViT-B/32-shaped CLIP
(random weights: the cost depends on the structure, not the skill) on CPU.

    python bench/bench_peft_cost.py                                   # full, lora, vpt, coop, clip_adapter, prefix, adapter
    python bench/bench_peft_cost.py --objective contrastive           # CLIP's contrastive loss on 8 image-caption pairs
    python bench/bench_peft_cost.py --strategies full lora --steps 5 --batch 16 --json /tmp/cost.json

One training step is what the Learner does: the library's own objective (`TextHeadClassification` on 10 class prompts,
through the strategy's `objective` and `prompt_templates` hooks, so CoOp trains its context and a frozen text tower's
class features are computed once, as in a real run; or `ContrastiveLoss`), backward, one AdamW step over
`strategy.param_groups`. The batch is 8 random 224x224 images; the image tower runs every step, as in a run's first
epoch (a real run caches image features once the image tower is frozen: `FeatureCacheCB`). Each strategy runs in
**its own fresh process** (a fresh model with the strategy applied to it; nothing leaks between rows) and reports three
numbers, all measured in that one run, side by side:

- **CPU** (and **wall**): the median CPU time (all threads of the process) and wall time of the timed steps, after a
  warm-up step (the first step allocates the optimiser state and warms the allocator). One torch thread by default
  (`--threads`): with two threads on two cores that other work also uses, one descheduled thread stalls the other at
  every parallel region and wall times swing several-fold; CPU time on one thread hardly depends on what else runs.
  The ratio is of CPU times.
- **saved**: the bytes autograd keeps for the backward pass during the first step's forward and loss (counted with
  `torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded since the model holds them
  anyway). This is exact, deterministic, and the part of the memory that grows with the batch.
- **peak**: how far the process's resident memory rises above where it stood when training started (model built,
  strategy applied), over the warm-up and timed steps: activations, gradients, AdamW state and the allocator's
  temporaries together. Measured by resetting the kernel's high-water mark (`/proc/self/clear_refs`, value 5) before
  the first step and reading `VmHWM` after the last; where that reset is not allowed, `getrusage(RUSAGE_SELF)`'s
  `ru_maxrss` is used and the column is marked `~` (the high-water mark then includes model construction, so a small
  rise can hide under it). `tracemalloc` would see none of this: torch allocates outside Python's allocator.

The tensors that train and their optimiser state are in the table too (`trainable` x 4 bytes x 3: weights' gradients
and AdamW's two moments) so the peak can be read against them.
"""
from __future__ import annotations
import argparse, contextlib, json, os, resource, statistics, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

DEFAULT = ['full', 'lora', 'vpt', 'coop', 'clip_adapter', 'prefix', 'adapter']
CLASSES = ['airplane', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck', 'automobile']


def _rss_status(field:str)->int|None:
    "A memory field of /proc/self/status in bytes (`VmRSS`, `VmHWM`), or None off Linux."
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'): return int(line.split()[1]) * 1024
    except OSError: return None

def _reset_peak()->bool:
    "Reset the kernel's peak-RSS mark of this process; False where that is not possible."
    try: Path('/proc/self/clear_refs').write_text('5'); return True
    except OSError: return False


@contextlib.contextmanager
def count_saved(model, # the model (its parameters are not counted: the model holds them anyway)
                into:list, # where the byte count is appended when the block ends
               ):
    "Count the bytes of distinct non-parameter storages autograd saves for backward inside the block."
    import torch
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}
    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params: seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): yield
    into.append(sum(seen.values()))


def make_step(model, strategy, objective:str, batch:int):
    "(forward-and-loss function, step function) for one training step of `model` with `strategy`'s objective and optimiser."
    import torch
    from clip_strategies.objectives import TextHeadClassification, ContrastiveLoss
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=g)
    learn = SimpleNamespace(model=model, fwd_model=model, device=torch.device('cpu'), autocast=contextlib.nullcontext,
                            features_cached=False, xb=images)
    if objective == 'classification':
        obj = strategy.objective(model, TextHeadClassification(model.tokenizer, CLASSES, strategy.prompt_templates(model, ['a photo of a {}.'])))
        learn.yb = torch.randint(len(CLASSES), (batch,), generator=g)
    else:
        obj = strategy.objective(model, ContrastiveLoss(model.tokenizer))
        learn.yb = [f'a photo of a {CLASSES[i % len(CLASSES)]} number {i}' for i in range(batch)]
    if hasattr(obj, 'before_fit'): obj.before_fit(learn)  # the classification objective tokenizes its prompts here
    opt = torch.optim.AdamW(strategy.param_groups(model, 1e-5, 0.01), lr=1e-5)
    def loss():
        obj.predict(learn); obj.get_loss(learn)
        return learn.loss
    def step(counter=contextlib.nullcontext()):
        opt.zero_grad(set_to_none=True)
        with counter: l = loss()
        l.backward()
        opt.step()
    return loss, step


def measure(name:str, # a registered strategy name
            objective:str='classification', # 'classification' or 'contrastive'
            batch:int=8, # images per step
            warmup:int=1, # untimed steps first
            steps:int=3, # timed steps (the median is reported)
           )->dict:
    "One strategy's step time, saved activations and peak memory rise, in this process (run it in a fresh one)."
    import torch
    from clip_strategies.core import count_params
    from clip_strategies.models import random_clip
    from clip_strategies.strategy import get_strategy
    torch.manual_seed(0)
    model = random_clip('ViT-B-32')  # built here, in this process: fresh for this strategy alone
    strategy = get_strategy(name)
    strategy.apply(model)
    model.train()
    trainable, total = count_params(model)
    loss, step = make_step(model, strategy, objective, batch)
    exact, start = _reset_peak(), _rss_status('VmRSS')
    if not exact: start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    saved, times, cpu = [], [], []
    for i in range(warmup + steps):  # the first step also counts what autograd saves
        t0, c0 = time.perf_counter(), time.process_time()
        step(count_saved(model, saved) if i == 0 else contextlib.nullcontext())
        if i >= warmup: times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    peak = _rss_status('VmHWM') if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(strategy=name, trainable=trainable, total=total, step_s=statistics.median(times), cpu_s=statistics.median(cpu), times=times,
                saved=saved[0], peak_rise=max(0, peak - start), peak_exact=exact, state=trainable * 4 * 3)


def run_child(name:str, args)->dict:
    "`measure(name)` in a fresh Python process; an error comes back as {'error': ...}."
    cmd = [sys.executable, __file__, '--child', name, '--objective', args.objective, '--batch', str(args.batch),
           '--warmup', str(args.warmup), '--steps', str(args.steps), '--threads', str(args.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if p.returncode or not lines:
        err = (p.stderr.strip().splitlines() or [f'exit {p.returncode}'])[-1]
        return dict(strategy=name, error=err[:160])
    return json.loads(lines[-1])


def _mb(b:int)->str: return f'{b / 2**20:8.1f}'
def _ratio(x, ref)->str: return f'{x / ref:6.2f}x' if ref else '     -'

def table(rows:list, ref:str='full')->str:
    "Fixed-width table of the measurements with ratios to `ref` (the first row if `ref` is absent)."
    good = [r for r in rows if 'error' not in r]
    base = next((r for r in good if r['strategy'] == ref), good[0] if good else None)
    head = (f"{'strategy':<13}{'trainable':>13}{'share':>9} | {'CPU ms':>8}{'ratio':>8}{'wall ms':>9} | {'saved MB':>9}{'ratio':>8} | "
            f"{'peak MB':>8}{'ratio':>8} | {'grad+AdamW MB':>13}")
    lines = [head, '-' * len(head)]
    for r in rows:
        if 'error' in r: lines.append(f"{r['strategy']:<13} error: {r['error']}"); continue
        mark = '' if r['peak_exact'] else '~'
        lines.append(f"{r['strategy']:<13}{r['trainable']:>13,}{100 * r['trainable'] / r['total']:>8.2f}% | "
                     f"{1000 * r['cpu_s']:>8.0f}{_ratio(r['cpu_s'], base['cpu_s']):>8}{1000 * r['step_s']:>9.0f} | "
                     f"{_mb(r['saved']):>9}{_ratio(r['saved'], base['saved']):>8} | "
                     f"{mark + _mb(r['peak_rise']).strip():>8}{_ratio(r['peak_rise'], base['peak_rise']):>8} | {_mb(r['state']):>13}")
    if base: lines.append(f"ratios to {base['strategy']}; CPU and wall: medians over the timed steps; saved: activations kept "
                          f"for backward; peak: rise of resident memory over the steps")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--strategies', nargs='+', default=DEFAULT, help='strategy names, each in its own process')
    p.add_argument('--objective', choices=['classification', 'contrastive'], default='classification')
    p.add_argument('--batch', type=int, default=8, help='images per step')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps before the timed ones')
    p.add_argument('--steps', type=int, default=3, help='timed steps (median reported)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads per process (0: torch\'s default)')
    p.add_argument('--json', default=None, help='also write the measurements to this JSON file')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.threads < 0:
        p.error(f'--batch and --steps must be >= 1, --warmup and --threads >= 0; got {a.batch}, {a.steps}, {a.warmup}, {a.threads}')
    if a.threads:
        import torch; torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(measure(a.child, a.objective, a.batch, a.warmup, a.steps))); return 0
    t0, rows = time.time(), []
    for s in a.strategies:
        rows.append(run_child(s, a)); print(f'  {s}: done ({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    print(f"ViT-B/32 (random weights), {a.objective}, batch {a.batch} x 224x224" +
          (f", {len(CLASSES)} class prompts" if a.objective == 'classification' else '') +
          f", AdamW; {a.warmup} warm-up + {a.steps} timed steps per strategy, each in a fresh process; "
          f"{a.threads or 'default'} torch thread(s) of {os.cpu_count()} CPUs, {time.time() - t0:.0f} s in all\n")
    print(table(rows))
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
