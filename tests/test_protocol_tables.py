"""The four protocol tables the package ships (`tools/make_protocol_tables.py`, read by the choose page and every strategy
page): every registered strategy and WiSE-FT, seeds 1–3, the protocol's settings, and the maker's own checks."""
import json, subprocess, sys
from pathlib import Path
import pytest
from clip_strategies.choose import protocol_tables, protocol_answers, PROTOCOL_QUESTIONS
from clip_strategies.compare import PROTOCOLS, PROTOCOL_HEADLINES, summary
from clip_strategies.strategy import list_strategies

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from make_protocol_tables import shipped_row, SEEDS

@pytest.fixture(scope='module')
def tables(): return protocol_tables()

@pytest.mark.parametrize('protocol', PROTOCOLS)
def test_every_strategy_and_wise_ft_over_three_seeds(tables, protocol):
    rows = tables[protocol]
    shots = [1, 2, 4, 8, 16] if protocol == 'few_shot' else [16]
    for s in list_strategies() + ['wise_ft']:
        got = sorted((r['shots'], r['seed']) for r in rows if r['strategy'] == s)
        assert got == [(k, seed) for k in shots for seed in SEEDS], (protocol, s, got)
    assert all(r['dataset'] == 'mini_shift' and not any(k.startswith('card.') for k in r) for r in rows)
    if protocol in PROTOCOL_HEADLINES: assert all(PROTOCOL_HEADLINES[protocol] in r for r in rows)

def test_the_transfer_targets_are_the_protocols(tables):
    assert {'mini_colors_accuracy', 'mini_backgrounds_accuracy'} <= set(tables['cross_dataset'][0])
    assert {'mini_shapes_accuracy', 'mini_sketch_accuracy'} <= set(tables['domain_generalization'][0])
    assert 'new_classes_accuracy' in tables['base_to_new'][0]
    heads = {r['strategy'] for r in tables['cross_dataset'] if r.get('cannot_name')}
    assert {'linear_probe', 'tip', 'gda'} <= heads and 'coop' not in heads  # heads cannot name colours; prompts can

def test_wise_ft_rows_are_mixes_of_the_full_runs(tables):
    for p, rows in tables.items():
        full = {(r['shots'], r['seed']): r for r in rows if r['strategy'] == 'full'}
        for r in (r for r in rows if r['strategy'] == 'wise_ft'):
            assert 0 <= r['wise_alpha'] <= 1 and r['trainable_params'] == full[(r['shots'], r['seed'])]['trainable_params']
            if r['wise_alpha'] == 1: assert r['accuracy'] == pytest.approx(full[(r['shots'], r['seed'])]['accuracy'], abs=0.5)

def test_every_question_has_an_answer(tables):
    answers = protocol_answers(tables)
    assert [a['question'] for a in answers] == list(PROTOCOL_QUESTIONS) and all(a['families'] for a in answers)

def test_shipped_rows_drop_only_the_card():
    assert shipped_row({'strategy': 'a', 'card.lr': 1, 'accuracy': 2.}) == {'strategy': 'a', 'accuracy': 2.}

def test_an_unknown_protocol_is_refused_before_anything_runs():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_protocol_tables.py'), '--protocols', 'few_shot,cross-dataset'], capture_output=True, text=True)
    assert r.returncode == 1 and 'unknown protocol(s) cross-dataset: allowed: few_shot, base_to_new' in r.stderr, r.stderr
