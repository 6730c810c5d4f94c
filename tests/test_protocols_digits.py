"""The comparison's protocols on a real image dataset: scikit-learn's bundled handwritten digits (tools/make_digits.py),
whose class names the mini CLIP never read. One comparison, a base-to-new comparison, then WiSE-FT and an ensemble of the
comparison's finished runs, all through the command lines. `pytest -s` prints the numbers."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from make_digits import make_digits

def command(module, args):
    "Run `python -m clip_strategies.<module> ARGS`; return its stdout (it must exit 0)."
    res = subprocess.run([sys.executable, '-m', f'clip_strategies.{module}'] + [str(a) for a in args], capture_output=True,
                         text=True, cwd=ROOT, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return res.stdout

def rows_by_strategy(out:Path)->dict: return {r['strategy']: r for r in json.loads((out/'results.json').read_text())}

def test_protocols_on_digits(tmp_path):
    data = make_digits(tmp_path/'digits')
    common = ['--config', 'mini', '--shots', '8', '--seeds', '1', '--jobs', '2', '--no-progress', 'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', data]
    print(command('compare', ['--strategies', 'zeroshot,linear_probe,lp_ft,full,lora', '--out', tmp_path/'cmp'] + common))
    acc = {s: r['accuracy'] for s, r in rows_by_strategy(tmp_path/'cmp').items()}
    assert acc['zeroshot'] < 20 and all(acc[s] > acc['zeroshot'] + 20 for s in ('linear_probe', 'lp_ft', 'full')), acc

    print(command('compare', ['--strategies', 'zeroshot,lora,linear_probe', '--out', tmp_path/'b2n'] + common + ['DATASET.SUBSAMPLE_CLASSES', 'base']))
    b2n = rows_by_strategy(tmp_path/'b2n')
    assert b2n['linear_probe']['harmonic_mean'] is None and b2n['linear_probe']['new_classes_accuracy'] is None  # marked, not faked
    assert b2n['lora']['new_classes_accuracy'] is not None and b2n['lora']['harmonic_mean'] is not None
    assert b2n['zeroshot']['accuracy'] != acc['zeroshot']  # scored on the 5 base classes, not the 10

    runs = tmp_path/'cmp'/'runs'
    full, lp, lpft = (next((runs/s).iterdir()) for s in ('full', 'linear_probe', 'lp_ft'))
    print(command('protocols', ['wise', full, '--alphas', 0, 0.5, 1]))
    wise, m = json.loads((full/'wise.json').read_text()), json.loads((full/'metrics.json').read_text())
    curve = wise['curve']
    assert wise['mix'] == 'classifier' and wise['alpha'] in (0, 0.5, 1)  # the original's classifier, α chosen on validation
    assert abs(curve[0]['imagefolder'] - m['before']['accuracy']) < 1e-3 and abs(curve[-1]['imagefolder'] - m['accuracy']) < 1e-3
    assert abs(curve[-1]['mini_shapes'] - m['also']['mini_shapes']['after']['accuracy']) < 1e-3  # the shift report's other dataset

    print(command('protocols', ['ensemble', lp, lpft, full, '--out', tmp_path/'ens.json']))
    ens = json.loads((tmp_path/'ens.json').read_text())['imagefolder']
    assert abs(ens['lp_ft (seed 1)'] - acc['lp_ft']) < 1e-3 and abs(ens['linear_probe (seed 1)'] - acc['linear_probe']) < 1e-3
    assert 'ensemble' in ens
