"""Recipes by backbone: the authors' (or ours) on real CLIP, the mini lab's on `mini`; `--print-config` says where every
value came from without loading a model; iteration-based recipes count steps; every result carries its recipe card."""
import json, yaml
import pytest
from clip_strategies import cli
from clip_strategies.cli import train_main
from clip_strategies.config import load_config, config_path, annotated_yaml, key_source, read_yaml, flatten
from clip_strategies.strategy import get_strategy_class, list_strategies
from clip_strategies.compare import run_row, card_columns

@pytest.mark.parametrize('name', [n for n in list_strategies() if n != 'zeroshot'])  # zero-shot trains and fits nothing
def test_every_strategy_has_a_real_clip_recipe_with_its_source(name):
    cls = get_strategy_class(name)
    assert cls.recipe_label('ViT-B/16') in ('authors', 'ours') and cls.recipe_label('mini') == 'mini lab'
    assert cls.recipe_for('ViT-B/16', 'eurosat', 16), f"{name} has no recipe for real CLIP"
    assert len(cls.real_recipe_source) > 20, f"{name}: say where the real-CLIP recipe comes from (RECIPES.md) or why it is ours"
    assert cls.recipe_for('mini') == dict(cls.recipe)  # the mini lab keeps its recipe

def test_shipped_real_clip_config_holds_no_recipe_keys():
    keys = flatten(read_yaml(config_path('vit_b16')))
    assert not [k for k in keys if k.startswith('OPTIM.') or k == 'DATALOADER.TRAIN_X.BATCH_SIZE'], keys

def test_print_config_loads_no_model_and_reads_back(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, 'load_clip', lambda *a, **k: pytest.fail('--print-config must not load a model'))
    assert train_main(['--config', 'vit_b16', 'TRAINER.NAME', 'coop', 'DATASET.NUM_SHOTS', '2', 'OPTIM.LR', '0.01', '--print-config']) == 0
    printed = capsys.readouterr().out
    assert 'LR: 0.01  # you' in printed and 'NUM_SHOTS: 2  # you' in printed and 'NAME: ViT-B/16  # config file' in printed
    assert 'MAX_EPOCH: 100  # recipe: coop, authors' in printed  # CoOp: 100 epochs at 2 shots
    assert 'MAX_ITER: 0  # default' in printed
    (tmp_path/'printed.yaml').write_text(printed)
    back = load_config(tmp_path/'printed.yaml')
    assert back['OPTIM.MAX_EPOCH'] == 100 and back['OPTIM.LR'] == 0.01 and back['OPTIM.NAME'] == 'sgd'
    assert not list((tmp_path).glob('output*'))

def test_mini_config_prints_the_mini_lab_recipe(capsys):
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'coop', '--print-config']) == 0
    printed = capsys.readouterr().out
    assert 'MAX_EPOCH: 50  # recipe: coop, mini lab' in printed and 'NAME: mini  # config file' in printed

def test_a_key_you_set_wins_and_your_epochs_win_over_a_recipes_iterations(monkeypatch):
    monkeypatch.setattr(get_strategy_class('full'), 'real_recipe', {'OPTIM.MAX_ITER': 1000, 'OPTIM.LR': 1e-5})
    cfg = load_config(config_path('vit_b16'), {'TRAINER.NAME': 'full'})
    assert cfg['OPTIM.MAX_ITER'] == 1000 and key_source(cfg, 'OPTIM.MAX_ITER') == 'recipe: full, ours'
    cfg = load_config(config_path('vit_b16'), {'TRAINER.NAME': 'full', 'OPTIM.MAX_EPOCH': 3, 'OPTIM.LR': 0.1})
    assert cfg['OPTIM.MAX_ITER'] == 0 and cfg['OPTIM.MAX_EPOCH'] == 3 and cfg['OPTIM.LR'] == 0.1
    cfg = load_config(config_path('vit_b16'), {'TRAINER.NAME': 'full', 'OPTIM.MAX_EPOCH': 3, 'OPTIM.MAX_ITER': 7})
    assert any('OPTIM.MAX_ITER = 7 decides' in n for n in cfg.strategy_spec()['notes'])

def test_recipe_option_keys_reach_the_strategy(monkeypatch):
    monkeypatch.setattr(get_strategy_class('last_n'), 'real_recipe', {'OPTIM.LR': 1e-5, 'TRAINER.LAST_N.N': 3})
    cfg = load_config(config_path('vit_b16'), {'TRAINER.NAME': 'last_n'})
    assert cfg.build_strategy().n == 3 and key_source(cfg, 'TRAINER.LAST_N.N') == 'recipe: last_n, ours'

def test_iterations_stop_the_run_and_the_card_records_it(tmp_path):
    out = tmp_path/'run'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'lora', 'OPTIM.MAX_ITER', '6', 'OPTIM.MIN_LR', '1e-6',
                       'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text()); card = m['card']
    assert card['steps_run'] == 6 and card['epochs_run'] == m['epochs'] == 2  # 4 steps an epoch on the mini lab's 16 shots
    assert card['recipe'] == 'lora, mini lab' and 'OPTIM.LR' in card['recipe_keys'] and 'OPTIM.MAX_ITER' not in card['recipe_keys']
    assert card['evaluated'] == {'checkpoint': 'last', 'epoch': 2} and card['selection_split'] == 'val'
    assert set(card['split_checksums']) == {'train', 'val', 'test'} and card['templates'] and card['version']
    assert any('Normalize' in s for s in card['test_transform'])
    (out/'resources.json').write_text('{}')
    row = run_row(out, 'lora', 16, 1)
    assert row['card.recipe'] == 'lora, mini lab' and json.loads(row['card.split_checksums']) == card['split_checksums']
