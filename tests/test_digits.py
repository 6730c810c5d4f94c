"""A real 10-class image dataset whose class names the mini CLIP never read: the mini lab still learns it, and says why
zero-shot is near chance. The images are scikit-learn's bundled handwritten digits (see tools/make_digits.py)."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from make_digits import make_digits, NAMES

def test_digits_16_shot_full_fine_tune_reaches_50_percent(tmp_path):
    data, out = make_digits(tmp_path/'digits'), tmp_path/'run'
    res = subprocess.run([sys.executable, '-m', 'clip_strategies.cli', '--config', 'mini', '--no-progress',
                          'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', str(data),
                          'OUTPUT_DIR', str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env={**os.environ, 'OMP_NUM_THREADS': '2'})
    assert res.returncode == 0, res.stderr[-3000:]
    said = res.stdout + res.stderr
    assert said.count('never saw') == 1, said[-3000:]  # the unseen class-name words, said once
    assert all(repr(n) in said for n in sorted(NAMES)[:8]), said[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['num_shots'] == 16 and m['dataset'] == 'imagefolder'
    assert m['before']['accuracy'] < 20, m['before']  # zero-shot: near chance (10%)
    assert m['accuracy'] >= 50, (m['before']['accuracy'], m['accuracy'])
    assert list(m['also']) == ['mini_shapes']  # the config's other test set comes from its own place, not DATASET.ROOT
