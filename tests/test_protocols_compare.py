"""`clip_strategies_compare --protocol`: each protocol's table ranks by its own headline (few-shot accuracy, base-to-new
harmonic mean, the mean over cross-dataset targets, the mean over shifted test sets); a head that cannot name the
targets' classes says so instead of a number; every row has its forgetting; bad protocol and target names are refused
before anything runs. Tiny runs on the mini lab: 2 shots, 1 seed, 1 epoch."""
import json
from pathlib import Path
import pytest

from clip_strategies import compare as compare_mod
from clip_strategies.compare import compare_main
from clip_strategies.evaluate import NEW_CLASSES

QUICK = ['--config', 'mini', '--shots', '2', '--seeds', '1', '--no-progress']
TINY = ['OPTIM.MAX_EPOCH', '1']

@pytest.fixture
def no_runs(monkeypatch):
    "Fail the test if the comparison starts any run (a refusal must come first)."
    def refuse(*a, **k): raise AssertionError("the comparison started runs instead of refusing")
    monkeypatch.setattr(compare_mod, 'run_pool', refuse)

def rows_of(out:Path)->dict: return {r['strategy']: r for r in json.loads((out/'results.json').read_text())}

def metrics_of(out:Path, strategy:str)->dict: return json.loads(next((out/'runs'/strategy).glob('*/metrics.json')).read_text())

def test_cross_dataset_ranks_by_the_target_mean_and_a_head_says_it_cannot_name_them(tmp_path, capsys):
    out = tmp_path/'cross'
    assert compare_main([*QUICK, '--protocol', 'cross_dataset', '--strategies', 'bitfit,linear_probe', '--jobs', '2', '--out', str(out), *TINY]) == 0, capsys.readouterr().err
    rows, printed = rows_of(out), capsys.readouterr().out
    targets = ['mini_colors', 'mini_backgrounds']  # the mini lab's default targets: the shapes' images, other classes
    bitfit, probe = rows['bitfit'], rows['linear_probe']
    assert abs(bitfit['target_mean'] - sum(bitfit[f'{t}_accuracy'] for t in targets) / 2) < 1e-6
    assert probe['target_mean'] is None and all(probe[f'{t}_accuracy'] is None for t in targets)  # not the zero-shot fallback
    assert probe['cannot_name'] == ', '.join(targets) and 'bitfit' in printed and 'cannot name' in printed
    assert 'over the targets' in (out/'ranking.md').read_text()
    m = metrics_of(out, 'bitfit')  # forgetting: the mean over the other test sets of before - after
    drops = [m['also'][t]['before']['accuracy'] - m['also'][t]['after']['accuracy'] for t in targets]
    assert abs(bitfit['forgetting'] - sum(drops) / len(drops)) < 1e-6
    assert abs(probe['forgetting']) < 1e-6  # a head on the frozen backbone forgets nothing of the zero-shot model

def test_domain_generalization_ranks_by_the_shifted_mean_which_a_head_names(tmp_path, capsys):
    out = tmp_path/'dg'
    assert compare_main([*QUICK, '--protocol', 'domain_generalization', '--strategies', 'linear_probe', '--out', str(out)]) == 0, capsys.readouterr().err
    rows = rows_of(out)
    shifted = ['mini_shapes', 'mini_sketch']  # the training task's classes in the two other styles
    r = rows['linear_probe']  # its head names the same classes in other styles
    assert abs(r['shifted_mean'] - sum(r[f'{t}_accuracy'] for t in shifted) / 2) < 1e-6 and r['shifted_mean'] > 0
    assert 'cannot_name' not in r and 'shifted' in (out/'ranking.md').read_text()

def test_base_to_new_and_few_shot_headlines(tmp_path, capsys):
    assert compare_main([*QUICK, '--protocol', 'base_to_new', '--strategies', 'zeroshot', '--out', str(tmp_path/'b2n'), 'DATASET.ALSO_TEST', '[]']) == 0, capsys.readouterr().err
    r = rows_of(tmp_path/'b2n')['zeroshot']
    assert r['harmonic_mean'] is not None and NEW_CLASSES in metrics_of(tmp_path/'b2n', 'zeroshot')['also'] and r['forgetting'] is None
    assert compare_main([*QUICK, '--strategies', 'zeroshot', '--out', str(tmp_path/'fs')]) == 0  # few_shot: the default
    r = rows_of(tmp_path/'fs')['zeroshot']
    assert 'harmonic_mean' not in r and 'target_mean' not in r and r['forgetting'] == 0 and r['accuracy'] is not None

def test_a_bad_protocol_is_named_with_the_allowed_ones(tmp_path, capsys, no_runs):
    assert compare_main([*QUICK, '--protocol', 'cross-datset', '--strategies', 'zeroshot', '--out', str(tmp_path/'x')]) == 2
    err = capsys.readouterr().err
    assert "'cross-datset'" in err and all(p in err for p in ('few_shot', 'base_to_new', 'cross_dataset', 'domain_generalization'))

def test_unknown_targets_are_refused_before_anything_runs(tmp_path, capsys, no_runs):
    out = tmp_path/'x'
    assert compare_main([*QUICK, '--protocol', 'cross_dataset', '--targets', 'mini_colors,mini_colours', '--strategies', 'zeroshot', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert "'mini_colours'" in err and 'mini_colors' in err and not out.exists()
    assert compare_main([*QUICK, '--targets', 'mini_colors', '--strategies', 'zeroshot', '--out', str(out)]) == 2  # few_shot has no targets
    assert '--targets' in capsys.readouterr().err
