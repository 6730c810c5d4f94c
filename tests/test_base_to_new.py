"""Base-to-new (CoCoOp's protocol) from the command line: train on the base half of the classes, test on both halves and
report their harmonic mean; a strategy that cannot name new classes is marked, not faked, in a run and in a comparison."""
import json

from clip_strategies.cli import train_main
from clip_strategies.compare import compare_main

B2N = ['DATASET.SUBSAMPLE_CLASSES', 'base', 'DATASET.ALSO_TEST', '[]']

def test_a_base_to_new_run_reports_base_new_and_their_harmonic_mean(tmp_path):
    out = tmp_path/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'bitfit', *B2N, 'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text())
    r = m['base_to_new']
    assert r['new'] is not None and abs(r['harmonic_mean'] - 2 * r['base'] * r['new'] / (r['base'] + r['new'])) < 1e-9
    assert r['base'] == m['accuracy'] and m['also']['new_classes']['before']['accuracy'] > 0

def test_a_comparison_ranks_by_the_harmonic_mean_and_marks_heads(tmp_path, capsys):
    out = tmp_path/'cmp'
    assert compare_main(['--config', 'mini', '--strategies', 'zeroshot,gda', '--shots', '2', '--seeds', '1', '--no-progress',
                         '--out', str(out), *B2N]) == 0
    printed = capsys.readouterr().out
    assert 'harmonic mean' in printed and '| 1 | zeroshot |' in printed and '| 2 | gda | — |' in printed
    rows = {r['strategy']: r for r in json.loads((out/'results.json').read_text())}
    assert rows['gda']['new_classes_accuracy'] is None and rows['gda']['harmonic_mean'] is None
    assert rows['zeroshot']['harmonic_mean'] > 0

def test_base_to_new_needs_a_classification_dataset(tmp_path, capsys):
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'zeroshot', 'DATASET.NAME', 'mini_captions', *B2N,
                       'OUTPUT_DIR', str(tmp_path/'r')]) == 2
    assert 'needs a classification dataset' in capsys.readouterr().err
