"""Fidelity of the LoRA-updated attention against a transcription of CLIP-LoRA's layers (MaxZanella/CLIP-LoRA @ 358f0d73,
`loralib/layers.py`; lines as cited in /work/shared/RECIPES.md §1.6: scaling #L40-42, init #L63-68, LinearLoRA.forward
#L186-208, PlainMultiheadAttentionLoRA.forward #L396-420)."""
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

import clip_strategies.adapter  # registers lora
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=1e-5)




def blocks(model):
    return [('visual', b) for b in model.visual.transformer.resblocks] + [('text', b) for b in model.transformer.resblocks]


# ---- transcription of the authors' code -------------------------------------------------------------------------------
def authors_scaling(alpha, r):
    # LoRA:loralib/layers.py#L40-42: self.scaling = self.lora_alpha / math.sqrt(self.r)
    return alpha / math.sqrt(r)


def authors_linear_lora(x, weight, bias, A, B, scaling, dropout_p=0., training=False):
    "LoRA:loralib/layers.py#L186-208 LinearLoRA.forward: W x + b, plus (dropout(x) @ A^T @ B^T) * scaling."
    result = F.linear(x, weight, bias)
    if A is not None:
        result = result + (F.dropout(x, dropout_p, training) @ A.transpose(0, 1) @ B.transpose(0, 1)) * scaling
    return result


def authors_attention(x, attn, lora, scaling, attn_mask=None):
    """LoRA:loralib/layers.py#L396-420 PlainMultiheadAttentionLoRA.forward (self-attention, batch first):
    q/k/v from their (LoRA) linear layers, scaled dot-product attention per head, then the output projection (LoRA if 'o')."""
    E, H = attn.embed_dim, attn.num_heads
    Wq, Wk, Wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    ab = lambda p: lora.get(p, (None, None))
    q = authors_linear_lora(x, Wq, bq, *ab('q'), scaling)
    k = authors_linear_lora(x, Wk, bk, *ab('k'), scaling)
    v = authors_linear_lora(x, Wv, bv, *ab('v'), scaling)
    N, L, _ = x.shape
    q, k, v = (t.view(N, L, H, E // H).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.transpose(1, 2).reshape(N, L, E)
    return authors_linear_lora(out, attn.out_proj.weight, attn.out_proj.bias, *ab('o'), scaling)


# ---- the comparisons -------------------------------------------------------------------------------------------------
def lora_factors(block):
    "{point: (A, B)} of the library's LoRA updates of one block's attention."
    return {p: (u.lora_A, u.lora_B) for p, u in block.attn.owners['lora']['updates'].items()}


def apply_lora(model, seed, **opts):
    torch.manual_seed(seed)
    strat = get_strategy('lora', **opts)
    strat.apply(model)
    with torch.no_grad():
        for _, b in blocks(model):
            for A, B in lora_factors(b).values(): B.normal_(0, 0.1)  # B starts at zero (#L63-68): make the update count
    return strat


def check_all_blocks(model, scaling, x_by_tower):
    for tower, b in blocks(model):
        x = x_by_tower[tower]
        mask = model.attn_mask if tower == 'text' else None
        y = b.ln_1(x)
        got = b.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        want = authors_attention(y, b.attn, lora_factors(b), scaling, mask)
        torch.testing.assert_close(got, want, **TOL)
        # and the whole block, x + attn(ln_1 x) then the (unadapted) MLP
        h = x + want
        torch.testing.assert_close(b(x, attn_mask=mask), h + b.mlp(b.ln_2(h)), **TOL)


@pytest.mark.parametrize('targets', [['q', 'k', 'v'], ['q', 'k', 'v', 'o']], ids=['qkv', 'qkvo'])
@pytest.mark.parametrize('backbone', ['tiny_openclip', 'mini'])
def test_lora_attention_matches_clip_lora(backbone, targets):
    "Default scale: alpha / sqrt(r), as CLIP-LoRA's code; every block of both towers, eval mode."
    model = tiny_clip() if backbone == 'tiny_openclip' else load_clip('mini', device='cpu')[0]
    strat = apply_lora(model, 0, rank=4, alpha=2., dropout=0.25, targets=targets)
    model.eval()
    assert strat.scaling == pytest.approx(authors_scaling(2., 4))
    W = model.transformer.width
    xs = {'visual': torch.randn(2, model.visual.positional_embedding.shape[0], model.visual.transformer.width),
          'text': torch.randn(2, model.positional_embedding.shape[0], W)}
    with torch.no_grad(): check_all_blocks(model, authors_scaling(2., 4), xs)


def test_lora_paper_scale_alpha_over_r():
    "scale='rank': the LoRA paper's alpha / r (the brief's formula), same update math otherwise."
    model = tiny_clip()
    strat = apply_lora(model, 1, rank=4, alpha=2., dropout=0., scale='rank')
    assert strat.scaling == pytest.approx(2. / 4)
    xs = {'visual': torch.randn(2, 17, 64), 'text': torch.randn(2, 77, 64)}
    with torch.no_grad(): check_all_blocks(model, 2. / 4, xs)


def test_lora_train_mode_gradients_with_dropout_zero():
    "Training mode, dropout 0: the gradients of A and B through one text block's attention equal the transcription's."
    model = tiny_clip()
    apply_lora(model, 2, rank=2, alpha=1., dropout=0.)
    model.train()
    b = model.transformer.resblocks[0]
    factors = lora_factors(b)
    x = torch.randn(2, 77, 64)
    y = b.ln_1(x)
    b.attn(y, y, y, need_weights=False, attn_mask=model.attn_mask)[0].pow(2).sum().backward()
    got = {p: (A.grad.clone(), B.grad.clone()) for p, (A, B) in factors.items()}
    mine = {p: (A.detach().clone().requires_grad_(True), B.detach().clone().requires_grad_(True)) for p, (A, B) in factors.items()}
    authors_attention(y.detach(), b.attn, mine, authors_scaling(1., 2), model.attn_mask).pow(2).sum().backward()
    for p in factors:
        torch.testing.assert_close(got[p][0], mine[p][0].grad, **TOL)
        torch.testing.assert_close(got[p][1], mine[p][1].grad, **TOL)


def test_lora_dropout_only_on_the_update_input():
    "Training with dropout: the frozen path W x is untouched; only the LoRA branch's input is dropped (#L186-208)."
    model = tiny_clip()
    apply_lora(model, 3, rank=2, alpha=1., dropout=0.5, targets=['q'])
    b = model.transformer.resblocks[0]
    b.attn.train()
    upd = b.attn.owners['lora']['updates']['q']
    x = torch.randn(2, 5, 64)
    torch.manual_seed(7); got = upd(x)
    torch.manual_seed(7); want = (F.dropout(x, 0.5, True) @ upd.lora_A.T @ upd.lora_B.T) * upd.scaling
    torch.testing.assert_close(got, want, **TOL)


# ---- CLIP-LoRA's checkpoint file (save_lora), loaded with `adapter.load_clip_lora` -------------------------------------
# Transcribed from MaxZanella/CLIP-LoRA @ 358f0d73, loralib/utils.py: INDEX_POSITIONS_TEXT #L10-19, INDEX_POSITIONS_VISION
# #L22-44, apply_lora #L107-134 (the order of `list_lora_layers`: text blocks, then vision blocks), save_lora #L137-183.
from types import SimpleNamespace

from clip_strategies.adapter import load_clip_lora

AUTHORS_TEXT_POSITIONS = {'top1': [11], 'top2': [10, 11], 'top3': [9, 10, 11], 'bottom': [0, 1, 2, 3], 'mid': [4, 5, 6, 7],
                          'up': [8, 9, 10, 11], 'half-up': [6, 7, 8, 9, 10, 11], 'half-bottom': [0, 1, 2, 3, 4, 5],
                          'all': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}
AUTHORS_VISION_POSITIONS_B16 = {'top': [11], 'top3': [9, 10, 11], 'bottom': [0, 1, 2, 3], 'mid': [4, 5, 6, 7], 'up': [8, 9, 10, 11],
                                'half-up': [6, 7, 8, 9, 10, 11], 'half-bottom': [0, 1, 2, 3, 4, 5],
                                'all': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}


def authors_layer(d, r, params, gen):
    "A stand-in for one PlainMultiheadAttentionLoRA: q_proj/k_proj/v_proj/proj with w_lora_A [r, d], w_lora_B [d, r]."
    lin = lambda: SimpleNamespace(w_lora_A=torch.randn(r, d, generator=gen) * 0.2, w_lora_B=torch.randn(d, r, generator=gen) * 0.2)
    names = {'q': 'q_proj', 'k': 'k_proj', 'v': 'v_proj', 'o': 'proj'}
    return SimpleNamespace(**{names[p]: lin() for p in params})


def authors_apply_lora_order(model, encoder, position):
    "apply_lora #L107-134: the (tower, block index) of each adapted attention, in `list_lora_layers` order."
    out = []
    if encoder in ('text', 'both'):
        out += [('text', i) for i in range(len(model.transformer.resblocks)) if i in AUTHORS_TEXT_POSITIONS[position]]
    if encoder in ('vision', 'both'):
        out += [('visual', i) for i in range(len(model.visual.transformer.resblocks)) if i in AUTHORS_VISION_POSITIONS_B16[position]]
    return out


def authors_save_lora(args, list_lora_layers, path):
    "save_lora #L137-183, writing to `path` (theirs builds the path from args.save_path, backbone, dataset, shots, seed)."
    weights = {}
    for i, layer in enumerate(list_lora_layers):
        layer_weights = {}
        if 'q' in args.params:
            layer_weights['q_proj'] = {'w_lora_A': layer.q_proj.w_lora_A.data, 'w_lora_B': layer.q_proj.w_lora_B.data}
        if 'k' in args.params:
            layer_weights['k_proj'] = {'w_lora_A': layer.k_proj.w_lora_A.data, 'w_lora_B': layer.k_proj.w_lora_B.data}
        if 'v' in args.params:
            layer_weights['v_proj'] = {'w_lora_A': layer.v_proj.w_lora_A.data, 'w_lora_B': layer.v_proj.w_lora_B.data}
        if 'o' in args.params:
            layer_weights['proj'] = {'w_lora_A': layer.proj.w_lora_A.data, 'w_lora_B': layer.proj.w_lora_B.data}
        weights[f'layer_{i}'] = layer_weights
    metadata = {'r': args.r, 'alpha': args.alpha, 'encoder': args.encoder, 'params': args.params, 'position': args.position}
    torch.save({'weights': weights, 'metadata': metadata}, path)


def write_authors_file(model, path, encoder, position, params, r=2, alpha=1, seed=0):
    "Their file for `model`: random trained-looking factors; returns {(tower, block): {point: (A, B)}}."
    gen = torch.Generator().manual_seed(seed)
    order = authors_apply_lora_order(model, encoder, position)
    layers = [authors_layer(64, r, params, gen) for _ in order]
    authors_save_lora(SimpleNamespace(r=r, alpha=alpha, encoder=encoder, params=list(params), position=position), layers, path)
    names = {'q': 'q_proj', 'k': 'k_proj', 'v': 'v_proj', 'o': 'proj'}
    return {key: {p: (getattr(l, names[p]).w_lora_A, getattr(l, names[p]).w_lora_B) for p in params} for key, l in zip(order, layers)}


@pytest.mark.parametrize('encoder,position,params,vision_layers', [
    ('both', 'all', ['q', 'k', 'v'], 2),          # CLIP-LoRA's defaults (run_utils.py#L32-37)
    ('vision', 'up', ['q', 'k', 'v', 'o'], 12),   # a ViT-B/16-deep image tower, blocks 8-11 only, output projection too
    ('text', 'all', ['q', 'v'], 2)], ids=['both-all-qkv', 'vision-up-qkvo', 'text-all-qv'])
def test_clip_lora_file_loads_to_the_authors_outputs(tmp_path, encoder, position, params, vision_layers):
    "Their file, loaded: every block's attention (eval) equals their LoRA attention with the file's A and B, alpha/sqrt(r)."
    model = tiny_clip(vision_layers)
    path = tmp_path/'lora_weights.pt'
    factors = write_authors_file(model, path, encoder, position, params, r=2, alpha=1)
    strat = load_clip_lora(model, path)
    model.eval()
    assert strat.rank == 2 and strat.alpha == 1. and strat.towers == encoder and strat.targets == [t for t in 'qkvo' if t in params]
    xs = {'visual': torch.randn(2, 17, 64), 'text': torch.randn(2, 77, 64)}
    with torch.no_grad():
        for tower, blocks_ in (('visual', model.visual.transformer.resblocks), ('text', model.transformer.resblocks)):
            for i, b in enumerate(blocks_):
                mask = model.attn_mask if tower == 'text' else None
                y = b.ln_1(xs[tower])
                got = b.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
                want = authors_attention(y, b.attn, factors.get((tower, i), {}), authors_scaling(1, 2), mask)
                torch.testing.assert_close(got, want, **TOL)


def test_clip_lora_file_equals_setting_the_factors_directly(tmp_path):
    "The whole model: loading their file gives the outputs of the library's LoRA with the same A and B set by hand."
    loaded, direct = tiny_clip(), tiny_clip()
    direct.load_state_dict(loaded.state_dict())
    path = tmp_path/'lora_weights.pt'
    factors = write_authors_file(loaded, path, 'both', 'all', ['q', 'k', 'v'], r=4, alpha=2, seed=3)
    load_clip_lora(loaded, path)
    get_strategy('lora', rank=4, alpha=2.).apply(direct)
    with torch.no_grad():
        for (tower, i), fs in factors.items():
            b = (direct.visual.transformer.resblocks if tower == 'visual' else direct.transformer.resblocks)[i]
            for p, (A, B) in fs.items(): b.attn.lora[p].lora_A.copy_(A); b.attn.lora[p].lora_B.copy_(B)
    images, text = torch.randn(3, 3, 32, 32), loaded.tokenizer(['a photo of a cat.', 'a photo of a dog.'])
    loaded.eval(), direct.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), direct.encode_image(images), **TOL)
        torch.testing.assert_close(loaded.encode_text(text), direct.encode_text(text), **TOL)
        assert (loaded.encode_image(images) - tiny_clip().encode_image(images)).abs().max() > 0  # the factors do something


def test_clip_lora_file_is_refused_when_it_does_not_fit(tmp_path):
    "Another rank than the metadata says, a file for a deeper model, a pickled object: a ValueError naming what is wrong."
    model = tiny_clip()
    path = tmp_path/'lora_weights.pt'
    write_authors_file(model, path, 'both', 'all', ['q', 'k', 'v'])
    data = torch.load(path, weights_only=True)
    data['metadata']['r'] = 3
    torch.save(data, tmp_path/'rank.pt')
    with pytest.raises(ValueError, match=r"w_lora_A is \(2, 64\).*needs \(3, 64\)"): load_clip_lora(tiny_clip(), tmp_path/'rank.pt')
    write_authors_file(tiny_clip(12), tmp_path/'deep.pt', 'vision', 'all', ['q', 'k', 'v'])
    with pytest.raises(ValueError, match='holds 12 layers.*adapts 2 blocks'): load_clip_lora(tiny_clip(), tmp_path/'deep.pt')
    write_authors_file(tiny_clip(12), tmp_path/'up.pt', 'vision', 'up', ['q', 'k', 'v'])
    with pytest.raises(ValueError, match="position 'up' is not defined for a vision tower of 2 blocks"):
        load_clip_lora(tiny_clip(), tmp_path/'up.pt')
    torch.save({'weights': {}, 'metadata': SimpleNamespace(r=2)}, tmp_path/'pickled.pt')
    with pytest.raises(ValueError, match='weights_only=True'): load_clip_lora(tiny_clip(), tmp_path/'pickled.pt')
