"""How much of CLIP each strategy trains: trainable parameters and their share of the model, per registered strategy
(default options), on randomly initialised backbones (structure only: nothing is downloaded).

    python bench/bench_trainable.py                                  # every strategy on ViT-B/32 and ViT-B/16
    python bench/bench_trainable.py --backbones ViT-B/32 --strategies full last_n projection
    python bench/bench_trainable.py --json /tmp/trainable.json       # also write the numbers as JSON

Each strategy is applied to a fresh copy of the backbone, so strategies that inject modules (prompts, adapters) count
their own new parameters and cannot leak into the next row. A strategy that cannot be applied to a backbone (for
example one that needs data first) gets its error in the table instead of numbers.
"""
from __future__ import annotations
import argparse, copy, json, sys, time
from pathlib import Path


def measure(strategy_name:str, # a registered strategy name
            base, # a pristine model; it is copied, never changed
           )->dict:
    "Trainable/total parameter elements and trainable tensors after applying `strategy_name` (default options)."
    from clip_strategies.core import count_params
    from clip_strategies.anatomy import trainable_names
    from clip_strategies.strategy import get_strategy
    model = copy.deepcopy(base)
    try:
        strategy = get_strategy(strategy_name)
        strategy.apply(model)
    except Exception as e:  # report, do not hide: the table shows the error
        return dict(error=f'{type(e).__name__}: {e}'.splitlines()[0][:90])
    trainable, total = count_params(model)
    return dict(trainable=trainable, total=total, share=100 * trainable / total, tensors=len(trainable_names(model)),
                n_tensors=sum(1 for _ in model.parameters()), callbacks=len(strategy.callbacks()))


def bench(backbones:list, # open_clip model names ('ViT-B/32' spelling accepted) or 'mini'
          strategies:list=None, # strategy names (default: every registered one)
         )->dict:
    "`{backbone: {strategy: measure(...)}}` for every pair."
    import torch
    from clip_strategies.models import load_clip
    from clip_strategies.strategy import list_strategies
    strategies = strategies or list_strategies()
    res = {}
    for bb in backbones:
        torch.manual_seed(0)
        base, _, _ = load_clip(bb, device='cpu')  # no pretrained tag: random init
        res[bb] = {s: measure(s, base) for s in strategies}
        del base
    return res


def _fmt_share(x:float)->str: return '<0.001%' if 0 < x < 0.001 else f'{x:.3f}%'

def _fmt_cell(m:dict)->str:
    return m['error'] if 'error' in m else f"{m['trainable']:>13,} {_fmt_share(m['share']):>8} {m['tensors']:>4}/{m['n_tensors']}"


def table(res:dict)->str:
    "The results as a fixed-width text table: one row per strategy, one column block per backbone."
    bbs = list(res)
    strategies = list(next(iter(res.values())))
    totals = {bb: next((m['total'] for m in res[bb].values() if 'total' in m), None) for bb in bbs}
    w = max(len(s) for s in strategies + ['strategy']) + 1
    head = f"{'strategy':<{w}}" + ''.join(f" | {bb + ' (' + (f'{totals[bb]:,}' if totals[bb] else '?') + ' params)':<36}" for bb in bbs)
    sub = f"{'':<{w}}" + ''.join(f" | {'trainable':>13} {'share':>8} {'tensors':>9}    " for _ in bbs)
    lines = [head, sub, '-' * len(head)]
    dyn = [s for s in strategies if any(res[bb][s].get('callbacks') for bb in bbs)]
    for s in strategies:
        lines.append(f'{s + ("*" if s in dyn else ""):<{w}}' + ''.join(f' | {_fmt_cell(res[bb][s]):<36}' for bb in bbs))
    if dyn: lines.append(f'* counted right after `apply`; its callbacks change what trains during training')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backbones', nargs='+', default=['ViT-B/32', 'ViT-B/16'], help='backbones (random init)')
    p.add_argument('--strategies', nargs='+', default=None, help='strategy names (default: all registered)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    a = p.parse_args(argv)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    t0 = time.time()
    res = bench(a.backbones, a.strategies)
    print(table(res))
    print(f'\n({time.time() - t0:.1f} s; default options of each strategy; the weights do not matter here, only the structure)')
    if a.json:
        from clip_strategies.core import atomic_write
        atomic_write(Path(a.json), json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
