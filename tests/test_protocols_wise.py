"""WiSE-FT as the original mixes it (RECIPES.md §1.10): the image encoder and a linear head whose zero-shot end is the
zero-shot classifier (temperature folded in), α on the README's grid and chosen on validation; mixing CLIP's two towers
stays as `--mix towers`. Through `clip_strategies_protocols wise` on short mini-lab runs."""
import json
import pytest
from clip_strategies.cli import train_main
from clip_strategies.protocols import protocols_main, chosen_alpha
from clip_strategies.tables import WISE_ALPHAS

QUICK = ['--config', 'mini', '--no-progress', 'DATASET.NUM_SHOTS', '4', 'OPTIM.MAX_EPOCH', '2', 'DATASET.ALSO_TEST', '[]']

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "A short lp_ft run on the mini lab: name -> (folder, metrics)."
    d = tmp_path_factory.mktemp('lp_ft')/'run'
    assert train_main([*QUICK, 'TRAINER.NAME', 'lp_ft', 'OUTPUT_DIR', str(d)]) == 0
    return {'lp_ft': (d, json.loads((d/'metrics.json').read_text()))}

def wise(run_dir, out, *extra):
    assert protocols_main(['wise', str(run_dir), '--out', str(out), *extra]) == 0
    return json.loads((out/'wise.json').read_text())

def test_lp_ft_alpha_0_is_the_zero_shot_head_and_alpha_is_chosen_on_val(runs, tmp_path):
    d, m = runs['lp_ft']
    w = wise(d, tmp_path)
    assert w['mix'] == 'classifier' and w['alpha_chosen_on'] == 'val'
    assert [r['alpha'] for r in w['curve']] == WISE_ALPHAS  # 0, 0.1, ..., 1 (WiSE:README.md#L74,#L92)
    assert w['curve'][0]['mini_shift'] == pytest.approx(m['before']['accuracy'], abs=1e-3)  # zero-shot, not the probe
    assert w['curve'][-1]['mini_shift'] == pytest.approx(m['accuracy'], abs=1e-3)
    best = max(w['curve'], key=lambda r: (r['val'], -r['alpha']))
    assert w['alpha'] == best['alpha'] == chosen_alpha(w['curve'])

def test_towers_mix_is_kept_as_an_option(runs, tmp_path):
    "Both towers mixed: for lp_ft α = 0 keeps the probe's head on the zero-shot encoder (the earlier behaviour)."
    d, m = runs['lp_ft']
    w = wise(d, tmp_path, '--alphas', '0', '1', '--mix', 'towers')
    assert w['mix'] == 'towers' and w['curve'][-1]['mini_shift'] == pytest.approx(m['accuracy'], abs=1e-3)
    assert w['curve'][0]['mini_shift'] != pytest.approx(m['before']['accuracy'], abs=1e-3)

def test_bad_mix_exits_2(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e: protocols_main(['wise', str(runs['lp_ft'][0]), '--mix', 'both'])
    assert e.value.code == 2 and "invalid choice: 'both'" in capsys.readouterr().err
