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
