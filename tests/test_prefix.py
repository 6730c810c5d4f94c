"Prefix tuning through the command line: its recipe, its learned file, retrieval, combinations and differential_lr."
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from clip_strategies.cli import train_main
from clip_strategies.core import count_params
from clip_strategies.models import load_clip, random_clip
from clip_strategies.prefix import Prefix, fold
from clip_strategies.strategy import get_strategy, load_learned, save_learned

QUICK = ['--no-progress', 'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[]', 'TRAIN.PRINT_FREQ', '0']

def outputs(model, seed=0):
    "Image and text features of a fixed small batch."
    g = torch.Generator().manual_seed(seed)
    images, tokens = torch.randn(3, 3, 32, 32, generator=g), model.tokenizer(['a red circle', 'two blue squares'])
    with torch.no_grad(): return model.encode_image(images), model.encode_text(tokens)

def assert_close(a, b, eps=1e-5):
    for x, y in zip(a, b): assert (x - y).abs().max() < eps, (x - y).abs().max()

def trained(out:Path)->torch.nn.Module:
    "A fresh mini CLIP with the run's strategy applied and its whole saved state dict loaded: the trained model."
    cfg = yaml.safe_load((out/'config.yaml').read_text())
    model = load_clip('mini')[0]
    get_strategy(json.loads((out/'metrics.json').read_text())['spec']).apply(model)
    model.load_state_dict(load_file(str(out/'model.safetensors')), strict=True)
    return model, cfg

def test_prefix_trains_from_the_cli_with_its_recipe(tmp_path, capsys):
    out = tmp_path/'prefix'
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', 'prefix', 'OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out)]) == 0
    assert "prefix's recipe sets OPTIM.NAME='adamw', OPTIM.LR=0.001" in capsys.readouterr().out
    model, cfg = trained(out)
    for key, value in Prefix.recipe.items():  # what the run used, as the config file records it
        section, name = key.split('.')
        assert cfg[section][name] == (2 if key == 'OPTIM.MAX_EPOCH' else value), key
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == 'prefix' and m['trainable_params'] == count_params(get_strategy('prefix').apply(load_clip('mini')[0]))[0]
    assert len(m['history']) == 2 and m['accuracy'] != m['before']['accuracy']
    with safe_open(str(out/'learned.safetensors'), 'pt') as f:
        meta, names = f.metadata(), list(f.keys())
    assert meta['backbone'] == 'mini' and json.loads(meta['strategy'])['name'] == 'prefix'
    assert sorted(names) == sorted(n for n, _ in model.named_parameters() if 'prefix_encoder' in n)
    fresh = load_clip('mini')[0]
    strategy = load_learned(fresh, out/'learned.safetensors', 'mini')
    assert_close(outputs(fresh), outputs(model))
    assert (outputs(fresh)[0] - outputs(load_clip('mini')[0])[0]).abs().max() > 1e-3  # the prefixes do change the model
    # fold, save the small file, load it onto another fresh model: the same outputs
    fold(strategy, fresh)
    small = save_learned(strategy, fresh, tmp_path/'folded.safetensors', 'mini')
    again = load_clip('mini')[0]
    assert load_learned(again, small, 'mini').folded is True
    assert_close(outputs(again), outputs(model))
    with pytest.raises(Exception, match=r"learned on backbone 'mini'; it cannot load onto 'ViT-B-32'"):
        load_learned(random_clip('ViT-B-32'), out/'learned.safetensors', 'ViT-B-32')

def test_prefix_retrieval_on_mini_captions(tmp_path):
    out = tmp_path/'ret'
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'prefix', 'DATASET.NAME', 'mini_captions',
            'DATASET.ALSO_TEST', '[]', 'OPTIM.MAX_EPOCH', '1', 'DATALOADER.TRAIN_X.BATCH_SIZE', '128', 'TRAIN.PRINT_FREQ', '0']
    assert train_main([*args, 'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text())
    assert m['task'] == 'retrieval' and m['strategy'] == 'prefix'
    assert 0 <= m['i2t_r1'] <= 100 and 0 <= m['t2i_r5'] <= 100
    assert (m['i2t_r1'], m['t2i_r1']) != (m['before']['i2t_r1'], m['before']['t2i_r1'])  # training moved the recalls
    fresh = load_clip('mini')[0]
    load_learned(fresh, out/'learned.safetensors', 'mini')
    assert_close(outputs(fresh), outputs(trained(out)[0]))

def test_prefix_in_a_yaml_combination(train_yaml):
    out, m = train_yaml("TRAINER:\n  NAME: [prefix, projection]\n  PREFIX:\n    LENGTH: 4\n    TOWERS: vision\n"
                        "MODEL:\n  BACKBONE:\n    NAME: mini\nDATASET:\n  NUM_SHOTS: 2\n  ALSO_TEST: []\nOPTIM:\n  MAX_EPOCH: 1\n")
    model, _ = trained(out)
    expected = get_strategy([{'name': 'prefix', 'length': 4, 'towers': 'vision'}, 'projection']).apply(load_clip('mini')[0])
    assert m['trainable_params'] == count_params(expected)[0]
    assert {n for n, p in expected.named_parameters() if p.requires_grad} >= {'visual.proj', 'text_projection'}
    assert not any(n.startswith('transformer.') and 'prefix' in n for n, _ in model.named_parameters())  # vision only
    assert model.visual.transformer.resblocks[0].attn.prefixes()[0].shape[0] == 4
    fresh = load_clip('mini')[0]
    load_learned(fresh, out/'learned.safetensors', 'mini')  # the prefixes alone (projection adds no tensors)
    torch.testing.assert_close(fresh.visual.transformer.prefix_encoder.input, model.visual.transformer.prefix_encoder.input)

def test_differential_lr_over_prefix_from_yaml(tmp_path, train_yaml):
    out, m = train_yaml("TRAINER:\n  NAME: differential_lr\n  DIFFERENTIAL_LR:\n    BASE: prefix\n    NEW_MULT: 0.5\n"
                        "  PREFIX:\n    LENGTH: 3\nDATASET:\n  NUM_SHOTS: 2\n  ALSO_TEST: []\nOPTIM:\n  MAX_EPOCH: 1\n")
    s = get_strategy(m['spec'])
    model = s.apply(load_clip('mini')[0])
    assert m['trainable_params'] == count_params(model)[0] == sum(p.numel() for n, p in model.named_parameters() if 'prefix' in n)
    groups = s.param_groups(model, 1e-3, 0.01)
    assert {g['lr'] for g in groups} == {5e-4} and sum(len(g['params']) for g in groups) == 10
    fresh = load_clip('mini')[0]
    loaded = load_learned(fresh, out/'learned.safetensors', 'mini')
    assert loaded.name == 'differential_lr'
    assert_close(outputs(fresh), outputs(trained(out)[0]))
    assert fold(loaded, fresh) is fresh and count_params(fresh)[0] == (3 + 2) * 2 * 3 * 128
    again = load_clip('mini')[0]  # the folded file names a folded base, so it loads
    assert load_learned(again, save_learned(loaded, fresh, tmp_path/'folded.safetensors', 'mini'), 'mini').base_options['folded']
    assert_close(outputs(again), outputs(trained(out)[0]))

@pytest.mark.parametrize('args, message', [
    (['TRAINER.PREFIX.LENGTH', '0'], "Config key TRAINER.PREFIX.LENGTH = 0"),
    (['TRAINER.PREFIX.TOWERS', 'image'], "'both', 'vision', 'text'"),
    (['TRAINER.PREFIX.LENGHT', '4'], "TRAINER.PREFIX.LENGTH"),
])
def test_bad_prefix_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path/'o'
    assert train_main(['--config', 'mini', *QUICK, 'TRAINER.NAME', 'prefix', *args, 'OUTPUT_DIR', str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

def test_prefix_after_another_attention_is_refused_and_composes_with_vpt():
    "Another strategy's attention (LoRA's) is refused, by name; VPT's prompts and the prefixes act together."
    with pytest.raises(Exception, match=r"LoRAMultiheadAttention, not a plain nn.MultiheadAttention"):
        get_strategy(['lora', 'prefix']).apply(load_clip('mini')[0])
    torch.manual_seed(0); vpt = get_strategy('vpt').apply(load_clip('mini')[0])
    torch.manual_seed(0); both = get_strategy(['vpt', 'prefix']).apply(load_clip('mini')[0])
    assert type(both.visual.transformer.resblocks[0].attn).__name__ == 'PrefixAttention'
    assert (outputs(both)[0] - outputs(vpt)[0]).abs().max() > 1e-3
