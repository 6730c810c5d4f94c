"""Every strategy on 16 shots, each with its own recipe, through the same CLI code path, side by side.

One row per strategy (and a few combinations): test accuracy and NLL before (zero-shot) and after (mean over the seeds,
and the sample standard deviation of the accuracy), accuracy on the
other test set after (what it forgets), trainable parameters and their share, training seconds.

    python bench/compare_strategies.py                         # 16 shots of mini_shift (also tests mini_shapes)
    python bench/compare_strategies.py --dataset digits        # real handwritten digits, names the backbone never read
    python bench/compare_strategies.py --only coop lora --seeds 1 2 3
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))

STRATEGIES = ['zeroshot', 'full', 'frozen_vision', 'frozen_text', 'projection', 'last_n', 'bitfit', 'logit_scale',
              'differential_lr', 'abs', 'coop', 'cocoop', 'kgcoop', 'vpt', 'prefix', 'adapter', 'lora', 'clip_adapter',
              ['lora', 'coop'], ['vpt', 'clip_adapter']]

def dataset_overrides(name:str, tmp:Path)->dict:
    "Config keys for the dataset to run on (the digits are written into `tmp` from scikit-learn's copy)."
    if name == 'mini_shift': return {}
    from make_digits import make_digits
    return {'DATASET.NAME': 'imagefolder', 'DATASET.ROOT': str(make_digits(tmp/'digits')), 'DATASET.ALSO_TEST': []}

def run_one(strategy, seed:int, data:dict, out:Path)->dict:
    "Train one strategy on one seed; its metrics and wall time."
    from clip_strategies.config import load_config, config_path
    from clip_strategies.cli import run
    over = {'TRAINER.NAME': strategy, 'SEED': seed, 'OUTPUT_DIR': str(out), 'TRAIN.PRINT_FREQ': 0, **data}
    t0 = time.time()
    m = run(load_config(config_path('mini'), over), progress=False, log=lambda *_: None)
    return dict(m, wall=time.time() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dataset', default='mini_shift', choices=['mini_shift', 'digits'])
    ap.add_argument('--seeds', type=int, nargs='+', default=[1])
    ap.add_argument('--only', nargs='+', default=None, help='strategy names (a combination as a+b)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', default=None, help='write the rows as JSON here')
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp())
    data = dataset_overrides(a.dataset, tmp)
    todo = [s for s in STRATEGIES if a.only is None or ('+'.join(s) if isinstance(s, list) else s) in a.only]
    print(f'{a.dataset}, 16 shots, seeds {a.seeds}, {a.threads} threads, load average {os.getloadavg()[0]:.1f}')
    print(f"{'strategy':22} {'before':>7} {'after':>7} {'± sd':>5} {'other after':>11} {'NLL after':>9} {'trainable':>10} {'share %':>8} {'train s':>7}")
    rows = []
    for s in todo:
        name = '+'.join(s) if isinstance(s, list) else s
        ms = [run_one(s, seed, data, tmp/f'{name}-{seed}') for seed in a.seeds]
        mean = lambda f: sum(f(m) for m in ms)/len(ms)
        other = [v['after']['accuracy'] for m in ms for v in m['also'].values()]
        accs = [m['accuracy'] for m in ms]
        spread = (sum((x - sum(accs)/len(accs))**2 for x in accs)/(len(accs) - 1))**0.5 if len(accs) > 1 else 0.
        row = dict(strategy=name, before=mean(lambda m: m['before']['accuracy']), after=mean(lambda m: m['accuracy']), after_std=spread,
                   other_after=sum(other)/len(other) if other else None, nll=mean(lambda m: m['nll']),
                   trainable=ms[0]['trainable_params'], total=ms[0]['total_params'], train_seconds=mean(lambda m: m['train_seconds']))
        rows.append(row)
        oa = f"{row['other_after']:11.1f}" if other else f"{'-':>11}"
        print(f"{name:22} {row['before']:7.1f} {row['after']:7.1f} {spread:5.1f} {oa} {row['nll']:9.3f} {row['trainable']:10,d} "
              f"{100*row['trainable']/row['total']:8.3f} {row['train_seconds']:7.1f}", flush=True)
    if a.out: Path(a.out).write_text(json.dumps(rows, indent=1))

if __name__ == '__main__': main()
