"""Adapters, LoRA and CLIP-Adapter across modules: learned-part files, merged LoRA checkpoints, combinations, differential
rates, the command line, retrieval."""
import copy, json, math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip_strategies.adapter  # registers adapter, lora, clip_adapter (also listed in strategy.STRATEGY_MODULES)
from clip_strategies.adapter import LoRAMultiheadAttention, LoRALinear, merge_lora, add_lora
from clip_strategies.anatomy import trainable_names, adaptable, AdaptableAttention, holds
from clip_strategies.cli import protocol_run, train_main
from clip_strategies.core import save_safetensors, read_safetensors, count_params
from clip_strategies.models import load_clip
from clip_strategies.strategy import strategy_record, get_strategy, check_strategy, save_learned, load_learned, StrategyError, added_parameters

pytestmark = pytest.mark.usefixtures('one_thread')  # one torch thread for this module's tests (conftest), restored after

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
    assert not any(isinstance(m, (LoRAMultiheadAttention, LoRALinear)) or holds(m, 'lora') for m in model.modules())
    assert all(type(b.attn) is nn.MultiheadAttention and type(b.mlp.c_fc) is nn.Linear
               for b in list(model.visual.transformer.resblocks) + list(model.transformer.resblocks))
    assert 'lora' not in added_parameters(model)
    assert list(model.state_dict()) == list(mini.state_dict())
    torch.testing.assert_close(outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    path = save_safetensors(model.state_dict(), tmp_path/'merged.safetensors')
    reloaded = load_clip('mini', pretrained=str(path), device='cpu')[0]
    torch.testing.assert_close(outputs(reloaded, batch), outputs(model, batch), rtol=0, atol=1e-6)
    assert (outputs(reloaded, batch) - outputs(mini, batch)).abs().max() > 1e-3

def layouts(model):
    "What decides how a model computes besides its numbers: module classes and settings, hooks, parameter layouts and flags."
    def plain(v): return isinstance(v, (bool, int, float, str, type(None)))
    return ([(n, type(m), sorted((k, v) for k, v in vars(m).items() if plain(v) and (not k.startswith('_') or k == '_qkv_same_embed_dim')),
              len(m._forward_hooks) + len(m._forward_pre_hooks)) for n, m in model.named_modules()],
            [(n, p.shape, p.stride(), p.dtype, p.requires_grad, p.is_contiguous()) for n, p in model.named_parameters()])

def aten_ops(model, batch):
    "How many times an inference forward calls each ATen op (no gradients): the kernels the model's computation takes."
    from torch.profiler import profile, ProfilerActivity
    model.eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof: model(*batch)
    return {e.key: e.count for e in prof.key_averages() if e.key.startswith('aten::')}

def test_merged_lora_computes_as_the_stock_model(mini, batch):
    "LoRA alone, merged: the base model in everything but its numbers, flags included, so it runs the base model's kernels."
    base, model = copy.deepcopy(mini).eval(), copy.deepcopy(mini)
    strategy = get_strategy('lora', targets=['q', 'k', 'v', 'o', 'c_fc', 'c_proj'])
    strategy.apply(model)
    assert not any(p.requires_grad for n, p in model.named_parameters() if 'lora_' not in n)  # apply froze the backbone
    perturb(model, strategy.learned_names(model))
    unmerged = outputs(model, batch)
    strategy.merge(model)
    model.eval()
    assert strategy_record(model) is None and added_parameters(model) == {}
    assert layouts(model) == layouts(base)
    torch.testing.assert_close(outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    # frozen weights take another matmul kernel in the text tower's attention (the float causal mask keeps it off the
    # fused path): a merged model left frozen ran 1.2x the base model's time (bench/bench_lora.py)
    ops = aten_ops(model, batch)
    assert ops == aten_ops(base, batch)
    assert aten_ops(copy.deepcopy(base).requires_grad_(False), batch) != ops  # what the flags change, on this PyTorch

def test_merged_lora_leaves_the_flags_to_what_still_holds_the_model(mini, batch):
    "Merged out of a combination with prefix tuning: the record stays and exactly the prefixes train."
    model, combo = copy.deepcopy(mini), get_strategy(['lora', 'prefix'])
    combo.apply(model)
    merge_lora(model)
    assert list(added_parameters(model)) == ['prefix'] and strategy_record(model) is not None
    assert sorted(trainable_names(model)) == sorted(combo.parts[1].learned_names(model))

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
    last, ad = strategy_record(model).claims[combo.name]  # the claims live in the model
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
        moved = [n for n, p in res['model'].named_parameters() if n.endswith(('lora.q.lora_B', 'up.weight')) and p.abs().max() > 0]
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
    assert "lora's recipe (mini lab) sets" in capsys.readouterr().out
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

def test_lora_refuses_an_attention_some_other_code_replaced(mini):
    "An attention that is neither open_clip's nn.MultiheadAttention nor the adaptable one is refused, by class, before any change."
    class OtherAttention(nn.MultiheadAttention): pass
    model = copy.deepcopy(mini)
    model.transformer.resblocks[1].attn.__class__ = OtherAttention
    with pytest.raises(ValueError, match="transformer.resblocks.1.attn is a OtherAttention, not open_clip's plain"):
        get_strategy('lora').apply(model)
    assert type(model.visual.transformer.resblocks[0].attn) is nn.MultiheadAttention and not added_parameters(model)

# --- today's LoRA, transcribed: the forward LoRAMultiheadAttention and LoRALinear had before the adaptable attention ---
def todays_lora_attention(m, A, B, s, p, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                          average_attn_weights=True, training=False):
    "The packed projection plus s·B A dropout(x) per target; the 'o' update of the heads' output added to out_proj's."
    def delta(t, x): return F.linear(F.linear(F.dropout(x, p, training), A[t]) * s, B[t])
    unbatched = query.dim() == 2
    def bf(x): return x.unsqueeze(0) if unbatched else x if m.batch_first else x.transpose(0, 1)
    q_in = bf(query)
    k_in = q_in if key is query else bf(key)
    v_in = k_in if value is key else bf(value)
    if unbatched and key_padding_mask is not None: key_padding_mask = key_padding_mask.unsqueeze(0)
    w, b = m.in_proj_weight, m.in_proj_bias
    if q_in is k_in and k_in is v_in: q, k, v = F.linear(q_in, w, b).chunk(3, dim=-1)
    else: q, k, v = (F.linear(x, wi, bi) for x, wi, bi in zip((q_in, k_in, v_in), w.chunk(3), b.chunk(3)))
    xs = dict(q=q_in, k=k_in, v=v_in)
    q, k, v = (y + delta(t, xs[t]) if t in A else y for t, y in zip('qkv', (q, k, v)))
    (n, l, e), S, h = q.shape, k.shape[1], m.num_heads
    q, k, v = (x.reshape(n, -1, h, e // h).transpose(1, 2) for x in (q, k, v))
    def additive(mk):
        if mk is None or mk.dtype != torch.bool: return None if mk is None else mk.to(q.dtype)
        return torch.zeros(mk.shape, dtype=q.dtype).masked_fill_(mk, float('-inf'))
    mask = additive(attn_mask)
    if mask is not None and mask.dim() == 3: mask = mask.view(n, h, l, S)
    if key_padding_mask is not None:
        kp = additive(key_padding_mask).view(n, 1, 1, S)
        mask = kp if mask is None else mask + kp
    if need_weights:
        att = (q @ k.transpose(-2, -1) / math.sqrt(e // h) + (0 if mask is None else mask)).softmax(-1)
        o, wts = att @ v, (att.mean(1) if average_attn_weights else att)
    else: o, wts = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    o = o.transpose(1, 2).reshape(n, l, e)
    out = F.linear(o, m.out_proj.weight, m.out_proj.bias)
    if 'o' in A: out = out + delta('o', o)
    if unbatched: return out.squeeze(0), (None if wts is None else wts.squeeze(0))
    return (out if m.batch_first else out.transpose(0, 1)), wts

def todays_lora_linear(lin, A, B, s, p, x, training=False):
    return F.linear(x, lin.weight, lin.bias) + F.linear(F.linear(F.dropout(x, p, training), A) * s, B)

@pytest.mark.parametrize('batch_first', [True, False])
def test_lora_gives_todays_outputs_for_the_same_factors(batch_first):
    torch.manual_seed(0)
    stock = nn.MultiheadAttention(16, 4, batch_first=batch_first)
    with torch.no_grad(): stock.in_proj_bias.normal_(); stock.out_proj.bias.normal_()
    targets, s, p = ['q', 'k', 'v', 'o'], 0.7, 0.25
    new = add_lora(adaptable(copy.deepcopy(stock)), rank=3, scaling=s, dropout=p, targets=targets)
    with torch.no_grad():
        for t in targets: new.lora[t].lora_A.normal_(); new.lora[t].lora_B.normal_()
    A, B = ({t: getattr(new.lora[t], f) for t in targets} for f in ('lora_A', 'lora_B'))
    xq, xk = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    xs = torch.randn(2, 6, 16)
    if not batch_first: xq, xk, xs = xq.transpose(0, 1), xk.transpose(0, 1), xs.transpose(0, 1)
    kpm = torch.zeros(2, 7, dtype=torch.bool); kpm[0, -3:] = True
    bm = torch.zeros(5, 7, dtype=torch.bool); bm[:, 0] = True
    causal = torch.zeros(6, 6).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float('-inf'))  # open_clip's text mask
    u = torch.randn(6, 16)
    cases = [((xs, xs, xs), dict(attn_mask=causal, need_weights=False)), ((xs, xs, xs), dict()),
             ((xq, xk, xk), dict(key_padding_mask=kpm)), ((xq, xk, xk), dict(attn_mask=bm, need_weights=False)),
             ((xq, xk, xk), dict(attn_mask=torch.randn(8, 5, 7), average_attn_weights=False)),
             ((u, u, u), dict(attn_mask=causal))]
    new.eval()
    for args, kw in cases:
        got, ref = new(*args, **kw), todays_lora_attention(stock, A, B, s, p, *args, **kw)
        torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-6)
        assert (got[1] is None) == (ref[1] is None)
        if ref[1] is not None: torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-6)
    new.train()  # LoRA dropout on each update's input, in the same order (q, k, v, then o): the same masks
    torch.manual_seed(3); got = new(xs, xs, xs, attn_mask=causal, need_weights=False)[0]
    torch.manual_seed(3); ref = todays_lora_attention(stock, A, B, s, p, xs, xs, xs, attn_mask=causal, need_weights=False, training=True)[0]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    lin = nn.Linear(16, 32)
    new_lin = add_lora(adaptable(copy.deepcopy(lin)), rank=2, scaling=s, dropout=p)
    with torch.no_grad(): new_lin.lora.lora_B.normal_()
    x = torch.randn(3, 16)
    for training in (False, True):
        new_lin.train(training)
        torch.manual_seed(4); got = new_lin(x)
        torch.manual_seed(4); ref = todays_lora_linear(lin, new_lin.lora.lora_A, new_lin.lora.lora_B, s, p, x, training)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)

# --- LoRA and prefix tuning on the one adaptable attention ---
ATTENTIONS = lambda m: [b.attn for b in list(m.visual.transformer.resblocks) + list(m.transformer.resblocks)]

@pytest.mark.parametrize('order', [['lora', 'prefix'], ['prefix', 'lora']], ids='+'.join)
def test_lora_and_prefix_combine_train_both_and_round_trip(tmp_path, mini, batch, order):
    model, combo = copy.deepcopy(mini), get_strategy(order)
    names = check_strategy(combo, model)
    lora, prefix = (combo.parts[order.index(n)] for n in ('lora', 'prefix'))
    lora_names, prefix_names = lora.learned_names(model), prefix.learned_names(model)
    assert sorted(names) == sorted(lora_names + prefix_names) and len(lora_names) == 5 * 3 * 2 and len(prefix_names) == 10
    assert all('.attn.lora.' in n for n in lora_names) and all('prefix_encoder' in n for n in prefix_names)
    assert all(type(a) is AdaptableAttention and list(a.owners) == order for a in ATTENTIONS(model))
    # one step moves exactly both parts' tensors
    perturb(model, lora_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for g in combo.param_groups(model, 1e-3, 0.01) for p in g['params']], lr=1e-3)
    model.train()
    img, txt, scale = model(*batch)
    F.cross_entropy(scale * img @ txt.T, torch.arange(4)).backward()
    opt.step()
    assert {n for n, p in model.named_parameters() if not torch.equal(p, before[n])} == set(names)
    # the learned part alone loads onto a fresh model: the same outputs
    path = save_learned(combo, model, tmp_path/'learned.safetensors', 'mini')
    fresh = load_clip('mini', device='cpu')[0]
    loaded = load_learned(fresh, path, 'mini')
    assert [p.name for p in loaded.parts] == order and sorted(loaded.learned_names(fresh)) == sorted(names)
    torch.testing.assert_close(outputs(fresh, batch), outputs(model, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(outputs(fresh, batch), outputs(mini, batch), atol=1e-3)
    # merging LoRA leaves the prefixes; folding them then leaves a model with the same outputs
    ref = outputs(model, batch)
    lora.merge(model)
    assert all(list(a.owners) == ['prefix'] for a in ATTENTIONS(model)) and not any('lora' in n for n in model.state_dict())
    assert list(added_parameters(model)) == ['prefix']
    torch.testing.assert_close(outputs(model, batch), ref, rtol=0, atol=1e-5)
    from clip_strategies.prefix import fold
    fold(prefix, model)
    torch.testing.assert_close(outputs(model, batch), ref, rtol=0, atol=1e-5)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == sorted(prefix.learned_names(model))

def test_prefix_then_lora_leaves_lora_when_prefixes_go(mini, batch):
    "Taking prefix tuning away (anatomy.remove_owner) leaves LoRA; taking LoRA away too gives open_clip's modules back."
    from clip_strategies.anatomy import remove_owner
    model, combo = copy.deepcopy(mini), get_strategy(['prefix', 'lora'])
    combo.apply(model)
    only_lora = get_strategy('lora').apply(copy.deepcopy(mini))
    sd = {k: v for k, v in model.state_dict().items() if 'prefix' not in k}
    remove_owner(model, 'prefix')
    for m in (model.visual.transformer, model.transformer): del m.prefix_encoder
    assert all(list(a.owners) == ['lora'] for a in ATTENTIONS(model))
    only_lora.load_state_dict(sd)
    torch.testing.assert_close(outputs(model, batch), outputs(only_lora, batch), rtol=0, atol=1e-6)
    remove_owner(model, 'lora')
    assert list(model.state_dict()) == list(mini.state_dict()) and all(type(a) is nn.MultiheadAttention for a in ATTENTIONS(model))

def combination_run(tmp_path, names, **over):
    "`clip_strategies_train TRAINER.NAME [names]` from a bare config (no YAML), quietly; returns the metrics and output folder."
    from clip_strategies.config import load_config
    from clip_strategies.cli import run
    out = tmp_path/'run'
    cfg = load_config(None, {'TRAINER.NAME': names, 'OUTPUT_DIR': str(out), 'DATASET.ALSO_TEST': [], 'TRAIN.PRINT_FREQ': 0, **over})
    return run(cfg, progress=False, log=lambda *a: None), out

def check_combination_run(m, out, names):
    assert m['strategy'] == '+'.join(names) and m['dataset'] == 'mini_shift' and m['num_shots'] == 16
    assert m['accuracy'] > m['before']['accuracy'] + 10, (m['accuracy'], m['before']['accuracy'])  # zero-shot: 27.4%
    tensors, _ = read_safetensors(out/'learned.safetensors')
    assert sum('.attn.lora.' in n for n in tensors) == 5 * 3 * 2 and sum('prefix_encoder' in n for n in tensors) == 10
    assert m['trainable_params'] == sum(t.numel() for t in tensors.values())

def test_prefix_then_lora_trains_once_the_keys_their_recipes_dispute_are_set(tmp_path):
    "From a bare config [prefix, lora] is refused, naming the keys; set to prefix tuning's values it beats zero-shot (46.2% against 27.4%)."
    from clip_strategies.config import load_config
    with pytest.raises(ValueError, match=r"OPTIM.LR \(prefix: 0.001, lora: 0.01\); OPTIM.WARMUP_EPOCH \(prefix: 1, lora: 0\)"):
        load_config(None, {'TRAINER.NAME': ['prefix', 'lora']})
    m, out = combination_run(tmp_path, ['prefix', 'lora'], **{'OPTIM.LR': 1e-3, 'OPTIM.WARMUP_EPOCH': 1})
    check_combination_run(m, out, ['prefix', 'lora'])

def test_lora_then_prefix_at_prefix_tunings_rate_beats_zero_shot(tmp_path):
    "LoRA's recipe at the rate prefix tuning trains at: both parts train (43.4% against 27.4% zero-shot)."
    m, out = combination_run(tmp_path, ['lora', 'prefix'], **{'OPTIM.LR': 1e-3})
    check_combination_run(m, out, ['lora', 'prefix'])

def test_lora_then_prefix_from_a_bare_config_beats_zero_shot(tmp_path):
    "[lora, prefix] has a recipe of its own (`strategy.COMBINATION_RECIPES`): LoRA's, at 3e-3 (LoRA's 1e-2 overruns the prefix MLP)."
    m, out = combination_run(tmp_path, ['lora', 'prefix'])
    assert m['spec'] and load_config_lr(out) == 3e-3
    check_combination_run(m, out, ['lora', 'prefix'])

def load_config_lr(out)->float:
    "The learning rate the run's written config.yaml holds."
    from clip_strategies.config import load_config
    return load_config(out/'config.yaml', {'OUTPUT_DIR': str(out/'again')})['OPTIM.LR']

def test_real_recipes_follow_recipes_md_and_leave_the_mini_lab_alone():
    "On real CLIP: CLIP-LoRA's recipe (RECIPES.md §1.6), ours for CLIP-Adapter (ratio 0.2, §1.4/§2.3) and the adapters; 'mini' unchanged."
    from clip_strategies.adapter import LoRA, CLIPAdapter, Adapter
    r = LoRA.recipe_for('ViT-B/16', 'eurosat', 4)
    assert {k: r[k] for k in ('OPTIM.NAME', 'OPTIM.LR', 'OPTIM.WEIGHT_DECAY', 'OPTIM.LR_SCHEDULER', 'OPTIM.MIN_LR', 'OPTIM.WARMUP_EPOCH',
                              'OPTIM.MAX_ITER', 'OPTIM.MAX_GRAD_NORM', 'DATALOADER.TRAIN_X.BATCH_SIZE', 'TRAINER.LORA.TEMPLATES')} == {
        'OPTIM.NAME': 'adamw', 'OPTIM.LR': 2e-4, 'OPTIM.WEIGHT_DECAY': 1e-2, 'OPTIM.LR_SCHEDULER': 'cosine', 'OPTIM.MIN_LR': 1e-6,
        'OPTIM.WARMUP_EPOCH': 0, 'OPTIM.MAX_ITER': 2000, 'OPTIM.MAX_GRAD_NORM': None, 'DATALOADER.TRAIN_X.BATCH_SIZE': 32,
        'TRAINER.LORA.TEMPLATES': 'plain'}
    assert [LoRA.recipe_for('ViT-B/16', 'dtd', k)['OPTIM.MAX_ITER'] for k in (1, 2, 8, 16, -1)] == [500, 1000, 4000, 8000, 8000]
    assert LoRA.recipe_label('ViT-B/16') == 'authors' and 'RECIPES.md §1.6' in LoRA.real_recipe_source
    c = CLIPAdapter.recipe_for('ViT-B/16', 'caltech101', 2)
    assert (c['OPTIM.NAME'], c['OPTIM.LR'], c['OPTIM.MAX_EPOCH'], CLIPAdapter.recipe_label('ViT-B/16')) == ('sgd', 0.002, 100, 'ours')
    assert get_strategy('clip_adapter').ratio == 0.2 and Adapter.recipe_label('ViT-B/16') == 'ours'
    from clip_strategies.config import load_config
    for cls in (LoRA, CLIPAdapter, Adapter):
        assert cls.recipe_for('mini', 'eurosat', 4) == cls.recipe and cls.real_recipe_source
        real = cls.recipe_for('ViT-B/16', 'eurosat', 16)
        cfg = load_config(None, {'TRAINER.NAME': cls.name, **real})  # every key and value is one the config takes
        assert {k: cfg[k] for k in real} == real

def test_lora_scores_with_clip_loras_one_template_when_asked(tmp_path, capsys, mini):
    "`TRAINER.LORA.TEMPLATES plain` from the command line: the run scores with 'a photo of a {}.' alone, CLIP-LoRA's template."
    from clip_strategies.data import get_dataset
    from clip_strategies.evaluate import evaluate
    out = tmp_path/'run'
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'lora', 'TRAINER.LORA.TEMPLATES', 'plain', 'DATASET.NUM_SHOTS', '1',
            'DATASET.ALSO_TEST', '[]', 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)]
    assert train_main(args) == 0, capsys.readouterr().err
    m = json.loads((out/'metrics.json').read_text())
    trained, prep = load_clip('mini', device='cpu')[:2]
    plain = get_strategy('lora', templates='plain')
    plain.apply(trained)
    trained.load_state_dict(read_safetensors(out/'model.safetensors')[0])
    test = get_dataset('mini_shift', split='test', transform=prep)
    ours = evaluate(trained, mini.tokenizer, test, 'classification', strategy=plain)
    assert m['spec']['templates'] == 'plain' and (ours['accuracy'], ours['nll']) == pytest.approx((m['accuracy'], m['nll']), abs=1e-4)
    assert plain.prompt_templates(trained, test.templates) == ['a photo of a {}.'] and len(test.templates) == 7
    assert abs(evaluate(trained, mini.tokenizer, test, 'classification')['nll'] - m['nll']) > 1e-3  # not the dataset's 7 (nll 4.571 vs 4.577)
