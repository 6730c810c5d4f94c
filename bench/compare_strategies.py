"""Every parameter-selection strategy on 16 shots of mini_shift, through the same CLI code path, side by side.

Prints one row per strategy: test accuracy and NLL before (zero-shot) and after, trainable parameters and their share.
Usage: python bench/compare_strategies.py [--epochs 10] [--lr 1e-3] [--out /tmp/compare]
"""
import argparse, json, tempfile, time
from pathlib import Path
import torch
from clip_strategies.config import load_config
from clip_strategies.cli import run

STRATEGIES = [('full', {}), ('frozen_vision', {}), ('frozen_text', {}), ('projection', {}), ('last_n', {}),
              ('bitfit', {'OPTIM.LR': 1e-2}), ('logit_scale', {'OPTIM.LR': 0.1}), ('differential_lr', {}),
              ('abs', {'OPTIM.WARMUP_EPOCH': 1})]

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--epochs', type=int, default=10); p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--threads', type=int, default=2); p.add_argument('--out', default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out or tempfile.mkdtemp())
    rows = []
    for name, extra in STRATEGIES:
        over = {'TRAINER.NAME': name, 'OPTIM.MAX_EPOCH': a.epochs, 'OPTIM.LR': a.lr, 'OUTPUT_DIR': str(out/name), **extra}
        t0 = time.time()
        m = run(load_config('clip_strategies/configs/mini.yaml', over), progress=False, log=lambda *_: None)
        rows.append((name, m['before']['top1'], m['accuracy'], m['before']['nll'], m['nll'], m['trainable_params'],
                     m['total_params'], time.time() - t0))
    print(f"{'strategy':16} {'acc before':>10} {'acc after':>9} {'NLL before':>10} {'NLL after':>9} {'trainable':>10} {'share %':>8} {'secs':>6}")
    for n, ab, aa, nb, na, t, tot, s in rows:
        print(f"{n:16} {ab:10.1f} {aa:9.1f} {nb:10.3f} {na:9.3f} {t:10,d} {100*t/tot:8.3f} {s:6.1f}")
    (out/'table.json').write_text(json.dumps(rows))

if __name__ == '__main__': main()
