"""Workers that live across runs and the work they share: the same numbers as a process per run, a failing or dying run
fails alone, and every reused result is keyed by all that changes it (each part of the key changed in turn)."""
import os, signal, threading, time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from clip_strategies.compare import compare, method_columns as comparable, run_in_workers, run_dir, write_request, run_overrides, finished
from clip_strategies.cli import resolve_config, before_metrics, _BEFORE
from clip_strategies.core import seed_everything
from clip_strategies.models import load_clip, keeping_base_models, rng_digest
from clip_strategies.mini import mini_dataset
import clip_strategies.zeroshot as zeroshot
from clip_strategies.zeroshot import features_key, split_features, features_dir, _FEATURES, FEATURE_SETS_ENV


def test_workers_give_the_numbers_of_a_process_per_run(tmp_path, monkeypatch):
    grid = dict(strategies=['zeroshot', 'lora'], shots=[2], seeds=[1, 2], jobs=1, progress=False)
    new = compare(out=tmp_path/'workers', **grid)
    monkeypatch.setenv(FEATURE_SETS_ENV, '0')  # the old path: nothing reused
    old = compare(out=tmp_path/'fresh', fresh_processes=True, **grid)
    assert not new['failed'] and not old['failed'] and len(new['rows']) == 4
    assert comparable(new['rows']) == comparable(old['rows'])  # every metric, to the last digit
    assert (tmp_path/'workers'/'workers'/'worker0.log').is_file()

def requests(out:Path, names:list)->list:
    ds = []
    for s in names:
        d = run_dir(out, s, 2, 1); ds.append(d)
        write_request(d, resolve_config('mini'), run_overrides(s, 2, 1, d, {'DATASET.ALSO_TEST': []}))
    return ds

def test_a_run_that_raises_fails_alone(tmp_path):
    good1, bad, good2 = requests(tmp_path, ['zeroshot', 'bitfit', 'gda'])
    (bad/'request.json').write_text('{"config": null, "overrides": {"OPTIM.MAX_EPOCH": -1}}')
    failed = run_in_workers([good1, bad, good2], 3, jobs=1, progress=False)
    assert failed == [bad] and finished(good1) and finished(good2)
    assert 'MAX_EPOCH' in (bad/'log.txt').read_text()

def worker_pids()->list:
    pids = []
    for p in Path('/proc').iterdir():
        try: cmd = (p/'cmdline').read_bytes().split(b'\0')
        except (OSError, ValueError): continue
        if b'--worker' in cmd and b'clip_strategies.compare' in cmd and int(p.name) != os.getpid(): pids.append(int(p.name))
    return pids

@pytest.mark.skipif(not Path('/proc').is_dir(), reason="finds the worker through /proc")
def test_a_worker_that_dies_fails_its_run_and_a_new_one_takes_the_rest(tmp_path):
    first, second, third = requests(tmp_path, ['bitfit', 'zeroshot', 'gda'])
    def kill_when_first_starts():
        deadline = time.time() + 120
        while time.time() < deadline and 'runs' not in ((first/'log.txt').read_text() if (first/'log.txt').exists() else ''):
            time.sleep(0.05)
        for pid in worker_pids(): os.kill(pid, signal.SIGKILL)
    t = threading.Thread(target=kill_when_first_starts); t.start()
    failed = run_in_workers([first, second, third], 3, jobs=1, progress=False)
    t.join()
    assert failed == [first] and finished(second) and finished(third)
    assert not worker_pids()  # none left behind

@pytest.fixture(scope='module')
def small():
    model, preprocess, _ = load_clip('mini', device='cpu')
    model.requires_grad_(False)  # a frozen tower: the only kind whose features are keyed
    return model, Subset(mini_dataset('mini_shapes', 'test', transform=preprocess), range(40))

def test_features_key_changes_with_each_part(small):
    model, ds = small
    key = features_key(model, ds, 16, 'cpu')
    assert key == features_key(model, ds, 16, 'cpu')
    other = load_clip('mini', device='cpu')[0].requires_grad_(False)
    with torch.no_grad(): other.visual.proj.add_(1e-3)
    changed = [features_key(other, ds, 16, 'cpu'),                                         # the tower's weights
               features_key(model, Subset(ds.dataset, range(1, 41)), 16, 'cpu'),           # which items
               features_key(model, Subset(mini_dataset('mini_shift', 'test', transform=ds.dataset.transform), range(40)), 16, 'cpu'),         # which dataset
               features_key(model, ds, 8, 'cpu'),                                          # batch size
               features_key(model, ds, 16, 'meta')]                                        # device
    assert len({key, *changed}) == 6
    h = model.visual.register_forward_hook(lambda *a: None)
    try: assert features_key(model, ds, 16, 'cpu') is None  # a hook: output unknowable, never kept
    finally: h.remove()

def test_a_reused_split_is_checked_and_leaves_the_generators_as_encoding_would(small):
    model, ds = small
    _FEATURES.clear()
    seed_everything(5); f1, l1 = split_features(model, ds, 16); after_first = rng_digest()
    seed_everything(5); f2, l2 = split_features(model, ds, 16); after_reuse = rng_digest()
    assert torch.equal(f1, f2) and torch.equal(l1, l2) and after_first == after_reuse
    f2 += 1  # a caller changing what it got does not change what is kept
    assert torch.equal(split_features(model, ds, 16)[0], f1)
    key = features_key(model, ds, 16, 'cpu')
    _FEATURES[key] = (f1 + 1, l1)  # what the key does not see: the first-batch check finds it and encodes afresh
    assert torch.equal(split_features(model, ds, 16)[0], f1)

@pytest.fixture
def counted_digests(monkeypatch, tmp_path):
    "The towers whose weights digest `features_key` computes, in a cache folder of the test's own."
    monkeypatch.setenv('CLIP_STRATEGIES_CACHE', str(tmp_path))
    calls, real = [], zeroshot.weights_digest
    monkeypatch.setattr(zeroshot, 'weights_digest', lambda m: calls.append(m) or real(m))
    _FEATURES.clear()
    yield calls
    _FEATURES.clear()

def test_a_trainable_tower_is_neither_digested_nor_kept(small, counted_digests):
    _, ds = small
    trainable = load_clip('mini', device='cpu')[0].requires_grad_(False)
    trainable.visual.proj.requires_grad_(True)  # one trainable tensor in the image tower is enough
    feats, _ = split_features(trainable, ds, 16)
    assert counted_digests == [] and not features_dir().exists() and len(_FEATURES) == 0
    assert features_key(trainable, ds, 16, 'cpu') is None
    trainable.requires_grad_(False)
    assert torch.equal(split_features(trainable, ds, 16)[0], feats) and len(list(features_dir().iterdir())) == 1

def test_a_frozen_towers_digest_is_computed_once_and_again_after_a_change(small, counted_digests):
    _, ds = small
    tower = load_clip('mini', device='cpu')[0].requires_grad_(False)
    key = features_key(tower, ds, 16, 'cpu')
    split_features(tower, ds, 16); split_features(tower, ds, 16)
    assert features_key(tower, ds, 16, 'cpu') == key and len(counted_digests) == 1
    with torch.no_grad():  # WiSE-FT's interpolation, in place: every weight halfway to zero
        for p in tower.parameters(): p.copy_(0.5 * p)
    changed = features_key(tower, ds, 16, 'cpu')
    assert changed != key and len(counted_digests) == 2
    tower.visual.load_state_dict(load_clip('mini', device='cpu')[0].visual.state_dict())  # back to the base weights
    assert features_key(tower, ds, 16, 'cpu') == key and len(counted_digests) == 3

def test_before_metrics_once_per_kept_model_and_same_generators(small):
    _, ds = small
    with keeping_base_models():
        seed_everything(3); m = load_clip('mini', device='cpu')[0]
        a = before_metrics(m, m.tokenizer, ds, {}, 'classification', 16, None); after_eval = rng_digest(); n = len(_BEFORE)
        seed_everything(3); m = load_clip('mini', device='cpu')[0]
        b = before_metrics(m, m.tokenizer, ds, {}, 'classification', 16, None)
        assert a == b and rng_digest() == after_eval and len(_BEFORE) == n
    plain = load_clip('mini', device='cpu')[0]
    n = len(_BEFORE); before_metrics(plain, plain.tokenizer, ds, {}, 'classification', 16, None)
    assert len(_BEFORE) == n  # outside a worker nothing is kept
