"Prefix tuning through the command line: its recipe, its learned file, retrieval, combinations and differential_lr."
import copy, json, math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from clip_strategies.cli import train_main
from clip_strategies.core import count_params
from clip_strategies.models import load_clip, random_clip
from clip_strategies.anatomy import AdaptableAttention, adaptable, holds
from clip_strategies.prefix import Prefix, PrefixEncoder, fold, fold_attention, prefixes
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
    assert "prefix's recipe (mini lab) sets OPTIM.NAME='adamw', OPTIM.LR=0.001" in capsys.readouterr().out
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
                        "MODEL:\n  BACKBONE:\n    NAME: mini\nDATASET:\n  NUM_SHOTS: 2\n  ALSO_TEST: []\nOPTIM:\n  MAX_EPOCH: 1\n"
                        "  WEIGHT_DECAY: 0.01\n")  # the one key the parts' recipes dispute (projection trains without decay)
    model, _ = trained(out)
    expected = get_strategy([{'name': 'prefix', 'length': 4, 'towers': 'vision'}, 'projection']).apply(load_clip('mini')[0])
    assert m['trainable_params'] == count_params(expected)[0]
    assert {n for n, p in expected.named_parameters() if p.requires_grad} >= {'visual.proj', 'text_projection'}
    assert not any(n.startswith('transformer.') and 'prefix' in n for n, _ in model.named_parameters())  # vision only
    assert prefixes(model.visual.transformer.resblocks[0].attn)[0].shape[0] == 4
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

def test_prefix_refuses_a_foreign_attention_and_composes_with_vpt_and_lora():
    "An attention some other code replaced is refused, by class; VPT's prompts, LoRA's updates and the prefixes act together."
    class OtherAttention(torch.nn.MultiheadAttention): pass
    model = load_clip('mini')[0]
    model.visual.transformer.resblocks[2].attn.__class__ = OtherAttention
    with pytest.raises(Exception, match=r"resblocks.2.attn is a OtherAttention, not open_clip's plain nn.MultiheadAttention"):
        get_strategy('prefix').apply(model)
    assert not hasattr(model.visual.transformer, 'prefix_encoder')
    torch.manual_seed(0); vpt = get_strategy('vpt').apply(load_clip('mini')[0])
    torch.manual_seed(0); both = get_strategy(['vpt', 'prefix']).apply(load_clip('mini')[0])
    attn = both.visual.transformer.resblocks[0].attn
    assert isinstance(attn, AdaptableAttention) and holds(attn, 'prefix') and prefixes(attn)[0].shape == (10, 128)
    assert (outputs(both)[0] - outputs(vpt)[0]).abs().max() > 1e-3
    for order in (['lora', 'prefix'], ['prefix', 'lora']):
        m = get_strategy(order).apply(load_clip('mini')[0])
        assert all(list(b.attn.owners) == order for b in m.transformer.resblocks)

# --- today's prefix attention, transcribed: PrefixAttention.forward before the adaptable attention ---
def todays_prefix_attention(m, pk, pv, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                            average_attn_weights=True, is_causal=False):
    "Prefix keys and values concatenated in front of the sequence's, the masks padded with zero columns: every query sees every prefix."
    same, unbatched = query is key and key is value, query.dim() == 2
    batch = lambda x: x.unsqueeze(0) if unbatched else x if m.batch_first else x.transpose(0, 1)
    query, key, value = map(batch, (query, key, value))
    w, b = m.in_proj_weight, m.in_proj_bias
    if same: q, k, v = F.linear(query, w, b).chunk(3, -1)
    else: q, k, v = (F.linear(x, wi, bi) for x, wi, bi in zip((query, key, value), w.chunk(3), b.chunk(3)))
    (B, N, D), M, h = q.shape, k.shape[1], m.num_heads
    pk, pv = (p.to(k.dtype).expand(B, -1, -1) for p in (pk, pv))
    k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
    def additive(mk): return mk.to(q.dtype) if mk.dtype != torch.bool else torch.zeros(mk.shape, dtype=q.dtype).masked_fill(mk, float('-inf'))
    if attn_mask is None and is_causal: attn_mask = torch.ones(N, M, dtype=torch.bool).triu(1)
    mask = None if attn_mask is None else additive(attn_mask)
    if mask is not None and mask.dim() == 3: mask = mask.view(B, h, N, M)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(B, 1, 1, M)
        mask = pad if mask is None else mask + pad
    mask = None if mask is None else F.pad(mask, (pk.shape[1], 0))
    heads = lambda x: x.view(B, x.shape[1], h, D // h).transpose(1, 2)
    q, k, v = heads(q), heads(k), heads(v)
    if not need_weights: out, wts = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    else:
        wts = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + (0 if mask is None else mask), -1)
        out = wts @ v
    out = F.linear(out.transpose(1, 2).reshape(B, N, D), m.out_proj.weight, m.out_proj.bias)
    if wts is not None and average_attn_weights: wts = wts.mean(1)
    if unbatched: return out.squeeze(0), (None if wts is None else wts.squeeze(0))
    return (out if m.batch_first else out.transpose(0, 1)), wts

@pytest.mark.parametrize('folded', [False, True])
@pytest.mark.parametrize('batch_first', [True, False])
def test_prefix_attention_gives_todays_outputs(batch_first, folded):
    torch.manual_seed(0)
    stock = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first)
    with torch.no_grad(): stock.in_proj_bias.normal_(); stock.out_proj.bias.normal_()
    enc = PrefixEncoder(3, 16, depth=2, hidden=8)
    new = adaptable(copy.deepcopy(stock)).set_kv('prefix', source=enc, layer=1).eval()
    if folded: fold_attention(new)
    with torch.no_grad(): pk, pv = enc(1)
    xq, xk, xs = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 6, 16)
    if not batch_first: xq, xk, xs = xq.transpose(0, 1), xk.transpose(0, 1), xs.transpose(0, 1)
    kpm = torch.zeros(2, 7, dtype=torch.bool); kpm[0, -3:] = True
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    fcausal = torch.zeros(6, 6).masked_fill(causal, float('-inf'))
    u = torch.randn(6, 16)
    cases = [((xs, xs, xs), dict(attn_mask=fcausal, need_weights=False)), ((xs, xs, xs), dict(attn_mask=causal)),
             ((xs, xs, xs), dict(is_causal=True, need_weights=False)), ((xs, xs, xs), dict(attn_mask=causal[None].expand(8, -1, -1))),
             ((xq, xk, xk), dict(key_padding_mask=kpm, average_attn_weights=False)), ((xq, xk, xk), dict(need_weights=False)),
             ((u, u, u), dict(attn_mask=fcausal)), ((u, u, u), dict(key_padding_mask=torch.tensor([False] * 5 + [True])))]
    with torch.no_grad():
        for args, kw in cases:
            got, ref = new(*args, **kw), todays_prefix_attention(stock, pk, pv, *args, **kw)
            torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-6)
            assert (got[1] is None) == (ref[1] is None)
            if ref[1] is not None: torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-6)

def test_folded_prefix_files_keep_their_names():
    "Folded prefixes are `attn.prefix_k` and `attn.prefix_v`, as before the adaptable attention: folded files still load."
    model, s = load_clip('mini')[0], get_strategy('prefix', folded=True)
    s.apply(model)
    names = s.learned_names(model)
    assert len(names) == 2 * 5 and names[:2] == ['visual.transformer.resblocks.0.attn.prefix_k', 'visual.transformer.resblocks.0.attn.prefix_v']
    attn = [k for k in model.state_dict() if k.startswith('visual.transformer.resblocks.0.attn.')]
    assert attn == [f'visual.transformer.resblocks.0.attn.{n}' for n in ('in_proj_weight', 'in_proj_bias', 'prefix_k', 'prefix_v', 'out_proj.weight', 'out_proj.bias')]
