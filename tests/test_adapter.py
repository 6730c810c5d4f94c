"""Adapters, LoRA and CLIP-Adapter across modules: learned-part files, merged LoRA checkpoints, combinations, differential
rates, the command line, retrieval."""
import copy, json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip_strategies.adapter  # registers adapter, lora, clip_adapter (also listed in strategy.STRATEGY_MODULES)
from clip_strategies.adapter import LoRAMultiheadAttention, merge_lora
from clip_strategies.anatomy import trainable_names
from clip_strategies.cli import protocol_run, train_main
from clip_strategies.core import save_safetensors, read_safetensors, count_params
from clip_strategies.models import load_clip
from clip_strategies.strategy import get_strategy, check_strategy, save_learned, load_learned, StrategyError

torch.set_num_threads(1)

@pytest.fixture(scope='module')
def mini():
    return load_clip('mini', device='cpu')[0]

@pytest.fixture(scope='module')
def batch(mini):
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=g), mini.tokenizer(['a red circle', 'two blue squares', 'a small star', 'a ring'])

def outputs(model, batch):
    "Normalised image and text features, eval mode."
    model.eval()
    with torch.no_grad(): return torch.cat(model(*batch)[:2])

def perturb(model, names, seed=0):
    "Give the learned tensors random values (as training would), so that a lost tensor shows."
    g, params = torch.Generator().manual_seed(seed), dict(model.named_parameters())
    with torch.no_grad():
        for n in names: params[n].copy_(torch.randn(params[n].shape, generator=g) * 0.05)

SPECS = ['adapter', 'lora', {'name': 'lora', 'rank': 3, 'targets': ['q', 'o', 'fc2'], 'towers': 'vision', 'scale': 'rank'},
         {'name': 'clip_adapter', 'side': 'both'}, ['lora', 'clip_adapter'], ['last_n', 'adapter']]

@pytest.mark.parametrize('spec', SPECS, ids=lambda s: json.dumps(s))
def test_learned_part_saves_and_loads_onto_a_fresh_model(tmp_path, mini, batch, spec):
    model, strategy = copy.deepcopy(mini), get_strategy(spec)
    strategy.apply(model)
    names = strategy.learned_names(model)
    assert names and set(names) <= set(trainable_names(model))
    perturb(model, names)
    path = save_learned(strategy, model, tmp_path/'learned.safetensors', 'mini')
    tensors, meta = read_safetensors(path)
    assert sorted(tensors) == sorted(names)  # the learned part alone, nothing of the backbone
    fresh = load_clip('mini', device='cpu')[0]
    loaded = load_learned(fresh, path, 'mini')
    assert loaded.learned_names(fresh) == names
    torch.testing.assert_close(outputs(fresh, batch), outputs(model, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(outputs(fresh, batch), outputs(mini, batch), atol=1e-3)  # the loaded part does something

def test_merged_lora_is_a_plain_open_clip_model_that_load_clip_reads(tmp_path, mini, batch):
    model = copy.deepcopy(mini)
    strategy = get_strategy('lora', targets=['q', 'k', 'v', 'o', 'c_fc', 'c_proj'])
    strategy.apply(model)
    perturb(model, strategy.learned_names(model))
    unmerged = outputs(model, batch)
    strategy.merge(model)
    assert not any(isinstance(m, LoRAMultiheadAttention) for m in model.modules())
    assert all(type(b.attn) is nn.MultiheadAttention and type(b.mlp.c_fc) is nn.Linear
               for b in list(model.visual.transformer.resblocks) + list(model.transformer.resblocks))
    assert 'lora' not in model.added_parameters
    assert list(model.state_dict()) == list(mini.state_dict())
    torch.testing.assert_close(outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    path = save_safetensors(model.state_dict(), tmp_path/'merged.safetensors')
    reloaded = load_clip('mini', pretrained=str(path), device='cpu')[0]
    torch.testing.assert_close(outputs(reloaded, batch), outputs(model, batch), rtol=0, atol=1e-6)
    assert (outputs(reloaded, batch) - outputs(mini, batch)).abs().max() > 1e-3

def test_merge_after_training_keeps_the_accuracy():
    res = protocol_run('lora', {'OPTIM.MAX_EPOCH': 2, 'DATASET.NUM_SHOTS': 4, 'DATASET.ALSO_TEST': []})
    from clip_strategies.cli import evaluate
    model, tok, test = res['model'], res['tokenizer'], res['splits']['test']
    before = evaluate(model, tok, test, 'classification')['accuracy']
    merge_lora(model)
    assert abs(evaluate(model, tok, test, 'classification')['accuracy'] - before) < 0.1

def test_lora_with_clip_adapter_combines(mini, batch):
    model, both = copy.deepcopy(mini), get_strategy(['lora', 'clip_adapter'])
    names = check_strategy(both, model)
    lora_names, ca_names = both.parts[0].learned_names(model), both.parts[1].learned_names(model)
    assert sorted(names) == sorted(lora_names + ca_names) and len(ca_names) == 2
    groups = both.param_groups(model, lr=1e-3, weight_decay=0.01)
    assert [g['name'] for g in groups] == ['lora/decay', 'clip_adapter/decay']
    assert sum(len(g['params']) for g in groups) == len(names)

def test_last_n_then_adapter_trains_both_claims(mini, batch):
    model, combo = copy.deepcopy(mini), get_strategy([{'name': 'last_n', 'n': 1}, 'adapter'])
    combo.apply(model)
    last, ad = combo.claims
    assert ad.keys() == set(combo.parts[1].learned_names(model))
    assert 'visual.transformer.resblocks.2.attn.in_proj_weight' in last and not any('ls_1.down' in n for n in last)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for g in combo.param_groups(model, 1e-2, 0.01) for p in g['params']], lr=1e-2)
    model.train()
    img, txt, scale = model(*batch)
    F.cross_entropy(scale * img @ txt.T, torch.arange(4)).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(last) | set(ad)

def test_adapter_before_last_n_is_refused(mini):
    with pytest.raises(StrategyError, match='adapter and last_n both train'):
        get_strategy(['adapter', 'last_n']).apply(copy.deepcopy(mini))

def test_differential_lr_over_lora(mini):
    model = copy.deepcopy(mini)
    s = get_strategy('differential_lr', base='lora', base_options={'rank': 4}, new_mult=3.0)
    names = check_strategy(s, model)
    assert names == get_strategy('lora', rank=4).learned_names(model) and len(names) == 5 * 3 * 2
    groups = s.param_groups(model, lr=1e-3, weight_decay=0.01)
    assert [(g['name'], g['lr'], len(g['params'])) for g in groups] == [('new/decay', pytest.approx(3e-3), 30)]

@pytest.mark.parametrize('name', ['lora', 'clip_adapter'])  # adapter changes the blocks as lora does (kept short: ~60 s)
def test_retrieval_trains_on_mini_captions(name):
    res = protocol_run(name, {'DATASET.NAME': 'mini_captions', 'OPTIM.MAX_EPOCH': 1, 'DATASET.ALSO_TEST': []})
    m = res['metrics']
    assert m['task'] == 'retrieval' and 0 <= m['i2t_r1'] <= 100 and 0 <= m['t2i_r5'] <= 100
    assert m['history'] and all(torch.isfinite(torch.tensor(h['train_loss'])) for h in m['history'])
    assert m['trainable_params'] == count_params(res['model'])[0] < 0.05 * m['total_params']
    if name != 'clip_adapter':  # zero-initialised factors have moved away from zero
        moved = [n for n, p in res['model'].named_parameters() if n.endswith(('lora_B.q', 'up.weight')) and p.abs().max() > 0]
        assert moved

def test_options_from_the_command_line(tmp_path, capsys):
    out = tmp_path/'run'
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'lora', 'TRAINER.LORA.TARGETS', '[q_proj, v_proj]',
            'TRAINER.LORA.RANK', '4', 'DATASET.NUM_SHOTS', '2', 'OPTIM.MAX_EPOCH', '1', 'DATASET.ALSO_TEST', '[]', 'OUTPUT_DIR', str(out)]
    assert train_main(args) == 0, capsys.readouterr().err
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == 'lora' and m['trainable_params'] == 5 * 2 * 2 * 4 * 128
    assert train_main(['--config', 'mini', 'TRAINER.NAME', 'clip_adapter', 'TRAINER.CLIP_ADAPTER.RATIO', '1.5',
                       'OUTPUT_DIR', str(tmp_path/'bad')]) == 2
    assert 'ratio' in capsys.readouterr().err.lower() and not (tmp_path/'bad').exists()

def test_lora_from_the_cli_with_its_recipe_writes_a_learned_part_that_loads(tmp_path, capsys, batch):
    "`TRAINER.NAME: lora` and no OPTIM key: CLIP-LoRA's (scaled) recipe trains, is recorded, and the learned part loads."
    from clip_strategies.config import load_config
    from clip_strategies.adapter import LoRA
    out = tmp_path/'run'
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'lora', 'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[]',
            'OUTPUT_DIR', str(out)]
    assert train_main(args) == 0, capsys.readouterr().err
    assert "lora's recipe sets" in capsys.readouterr().out
    written = load_config(out/'config.yaml', {'OUTPUT_DIR': str(tmp_path/'again')})
    for key, value in LoRA.recipe.items(): assert written[key] == value, key
    assert LoRA.recipe['OPTIM.NAME'] == 'adamw' and LoRA.recipe['DATALOADER.TRAIN_X.BATCH_SIZE'] == 32
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == 'lora' and m['trainable_params'] == 5 * 3 * 2 * 2 * 128
    trained = load_clip('mini', device='cpu')[0]
    get_strategy('lora').apply(trained)
    trained.load_state_dict(read_safetensors(out/'model.safetensors')[0])
    tensors, meta = read_safetensors(out/'learned.safetensors')
    assert sorted(tensors) == sorted(get_strategy('lora').learned_names(trained)) and meta['backbone'] == 'mini'
    fresh = load_clip('mini', device='cpu')[0]
    assert load_learned(fresh, out/'learned.safetensors', 'mini').get_options() == get_strategy('lora').get_options()
    torch.testing.assert_close(outputs(fresh, batch), outputs(trained, batch), rtol=0, atol=1e-6)
    assert (outputs(fresh, batch) - outputs(load_clip('mini', device='cpu')[0], batch)).abs().max() > 1e-4  # it trained
    with pytest.raises(StrategyError, match="learned on backbone 'mini'; it cannot load onto 'ViT-B-32'"):
        load_learned(load_clip('mini', device='cpu')[0], out/'learned.safetensors', 'ViT-B-32')

def test_lora_with_coop_from_yaml_uses_loras_recipe(tmp_path, train_yaml):
    "A YAML list `[lora, coop]`: both train, the first part's recipe wins where both set a key, one learned file."
    out, _ = train_yaml("TRAINER:\n  NAME: [lora, coop]\n  LORA:\n    RANK: 1\n  COOP:\n    N_CTX: 2\n"
                        "OPTIM:\n  MAX_EPOCH: 1\nDATASET:\n  NUM_SHOTS: 1\n  ALSO_TEST: []\n")
    from clip_strategies.config import load_config
    from clip_strategies.adapter import LoRA
    written = load_config(out/'config.yaml', {'OUTPUT_DIR': str(tmp_path/'again')})
    assert written['OPTIM.NAME'] == 'adamw' and written['OPTIM.LR'] == LoRA.recipe['OPTIM.LR'] and written['OPTIM.MAX_EPOCH'] == 1
    names = sorted(read_safetensors(out/'learned.safetensors')[0])
    assert 'token_embedding.ctx' in names and sum('lora_B' in n for n in names) == 5 * 3
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == 'lora+coop' and m['trainable_params'] == 5 * 3 * 2 * 128 + 2 * 128

def test_lora_refuses_an_attention_another_strategy_replaced():
    with pytest.raises(ValueError, match="PrefixAttention"):
        get_strategy(['prefix', 'lora']).apply(load_clip('mini', device='cpu')[0])
