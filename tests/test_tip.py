"Tip-Adapter from YAML through the command line: a run writes its metrics; retrieval and bad options are refused."
import json
import pytest
from clip_strategies.cli import train_main

QUICK = ['--no-progress', 'DATASET.NUM_SHOTS', '4']

@pytest.mark.parametrize('name, extra', [('tip', ['TRAINER.TIP.AUGMENT_EPOCH', '2']),
                                         ('tip_f', ['TRAINER.TIP_F.AUGMENT_EPOCH', '2', 'TRAINER.TIP_F.EPOCHS', '3'])])
def test_cli_run_writes_metrics(tmp_path, name, extra):
    out = tmp_path/name
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', name, *extra, 'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == name and m['trainable_params'] == 0 and m['history'] == []
    assert m['accuracy'] >= m['before']['accuracy'] - 1e-9, (m['accuracy'], m['before']['accuracy'])
    # the fitted adapter is kept in learned.safetensors: loaded on a fresh model it scores the run's test accuracy
    from clip_strategies.models import load_clip
    from clip_strategies.data import get_dataset
    from clip_strategies.strategy import load_learned
    model, prep, tok = load_clip('mini')
    s = load_learned(model, out/'learned.safetensors', 'mini')
    assert s.name == name and s.found is not None
    from clip_strategies.evaluate import evaluate
    assert evaluate(model, tok, get_dataset('mini_shift', split='test', transform=prep), strategy=s)['top1'] == pytest.approx(m['accuracy'], abs=1e-4)

def test_cli_refuses_retrieval(tmp_path, capsys):
    out = tmp_path/'ret'
    assert train_main(['--config', 'mini', '--no-progress', 'DATASET.NAME', 'mini_captions', 'TRAINER.NAME', 'tip',
                       'OUTPUT_DIR', str(out)]) == 2
    assert 'classification only' in capsys.readouterr().err
    assert not (out/'metrics.json').exists()

def test_cli_bad_option(tmp_path, capsys):
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', 'tip', 'TRAINER.TIP.SEARCH_SCALE', '[7, 0.05]',
                       'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    assert 'SEARCH_SCALE = [7, 0.05]: option search_scale' in capsys.readouterr().err

def test_yaml_original_keys_build_options(tmp_path):
    "Intel's clip_finetune keys (TRAINER.TIP.*, partly lower case) in a YAML file set tip's and tip_f's options."
    from clip_strategies.config import load_config
    y = tmp_path/'tip.yaml'
    y.write_text("TRAINER:\n  NAME: tip_f\n  TIP:\n    LOAD_CACHE: false\n    AUGMENT_EPOCH: 2\n    NEW: true\n    NEW_DATASET: false\n"
                 "    CACHE_SIZE: 7\n    beta: 3.5\n    alpha: 0.5\n    search_best: false\n")
    s = load_config(y).build_strategy()
    assert (s.name, s.load_cache, s.augment_epoch, s.new, s.new_dataset, s.cache_size, s.beta, s.alpha, s.search_best) == \
           ('tip_f', False, 2, True, False, 7, 3.5, 0.5, False)
    s = load_config(None, {'TRAINER.NAME': 'tip', 'TRAINER.TIP.CACHE': str(tmp_path/'c.safetensors'), 'TRAINER.TIP.NEW_DATASET': True}).build_strategy()
    assert s.new_dataset and s.load_cache and s.cache_size == 100

def test_cli_new_dataset_merges(tmp_path, capsys):
    "NEW_DATASET without a cache file is refused; after a first run it merges a second dataset into the file."
    from clip_strategies.core import read_safetensors
    cache = str(tmp_path/'cache.safetensors')
    common = ['--config', 'mini', *QUICK, 'TRAINER.NAME', 'tip', 'TRAINER.TIP.AUGMENT_EPOCH', '0', 'TRAINER.TIP.CACHE', cache]
    assert train_main([*common, 'TRAINER.TIP.NEW_DATASET', 'true', 'OUTPUT_DIR', str(tmp_path/'a')]) != 0
    assert 'no cache file at' in capsys.readouterr().err
    assert train_main([*common, 'OUTPUT_DIR', str(tmp_path/'b')]) == 0
    assert train_main([*common, 'DATASET.NAME', 'mini_shapes', 'TRAINER.TIP.NEW_DATASET', 'true', 'OUTPUT_DIR', str(tmp_path/'c')]) == 0
    t, meta = read_safetensors(cache)
    assert meta['datasets'] == '2' and len(t['keys']) == 2 * 4 * 8
