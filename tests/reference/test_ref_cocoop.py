"""Fidelity of CoCoOp's meta-network and conditional prompts against a transcription of the authors' math
(KaiyangZhou/CoOp `trainers/cocoop.py`; line numbers at the commit stored by the search tool, 1fbb1a6f; /work/shared/RECIPES.md
§1.2 cites the same code at ff61507c as CoOp:trainers/cocoop.py#L95-102 (meta-net) and #L144-161 (forward))."""
from collections import OrderedDict
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip_strategies.prompt  # registers cocoop
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.prompt import prompt_embedding, conditional_logits
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip

torch.set_num_threads(1)
CLASSNAMES = ['dog', 'sea lion', 'red panda bear']
TOL = dict(atol=1e-5, rtol=1e-5)




# ---- transcription of the authors' code -------------------------------------------------------------------------------
def authors_meta_net(vis_dim, ctx_dim):
    # CoOp:trainers/cocoop.py PromptLearner.__init__ L95-99 (RECIPES: #L95-102)
    return nn.Sequential(OrderedDict([
        ('linear1', nn.Linear(vis_dim, vis_dim // 16)),
        ('relu', nn.ReLU(inplace=True)),
        ('linear2', nn.Linear(vis_dim // 16, ctx_dim))]))


def authors_prompts(meta_net, ctx, token_prefix, token_suffix, im_features):
    "CoOp:trainers/cocoop.py PromptLearner.forward L140-157 and construct_prompts L118-138 (RECIPES: #L144-161)."
    bias = meta_net(im_features).unsqueeze(1)      # (batch, 1, ctx_dim)
    ctx_shifted = ctx.unsqueeze(0) + bias          # (batch, n_ctx, ctx_dim)
    n_cls = len(token_prefix)
    return torch.stack([torch.cat([token_prefix, c.unsqueeze(0).expand(n_cls, -1, -1), token_suffix], dim=1) for c in ctx_shifted])


def authors_text_encoder(model, prompts, tokenized_prompts):
    "CoOp:trainers/cocoop.py TextEncoder.forward L47-58 (batch-first open_clip blocks with the causal mask given explicitly)."
    x = model.ln_final(model.transformer(prompts + model.positional_embedding, attn_mask=model.attn_mask))
    return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ model.text_projection


def authors_logits(model, meta_net, ctx, token_weight, tokenized_prompts, image_features):
    "CoOp:trainers/cocoop.py CustomCLIP.forward L171-189 (eval branch: the logits)."
    n_ctx = ctx.shape[0]
    embedding = F.embedding(tokenized_prompts, token_weight)
    prefix, suffix = embedding[:, :1], embedding[:, 1 + n_ctx:]                # L112-113: SOS; CLS . EOS
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    prompts = authors_prompts(meta_net, ctx, prefix, suffix, image_features)
    logits = []
    for pts_i, imf_i in zip(prompts, image_features):
        text_features = authors_text_encoder(model, pts_i, tokenized_prompts)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits.append(model.logit_scale.exp() * imf_i @ text_features.t())
    return torch.stack(logits)


# ---- the comparisons -------------------------------------------------------------------------------------------------
def setup(model, seed=0):
    torch.manual_seed(seed)
    weight = model.token_embedding.weight.detach().clone()
    strat = get_strategy('cocoop')  # ctx_init 'a photo of a', 4 context vectors, class name at the end
    strat.apply(model)
    emb = prompt_embedding(model)
    with torch.no_grad():
        emb.ctx.add_(torch.randn_like(emb.ctx) * 0.3)  # a trained-looking context
        for p in emb.meta_net.parameters(): p.add_(torch.randn_like(p) * 0.1)
    meta = authors_meta_net(model.visual.output_dim, emb.weight.shape[1])
    meta.load_state_dict(emb.meta_net.state_dict())  # same names and shapes as the authors' meta-net, strictly
    images = torch.randn(3, 3, model.visual.image_size[0], model.visual.image_size[1])
    with torch.no_grad(): feats = model.encode_image(images)
    return strat, emb, meta, weight, feats


@pytest.mark.parametrize('backbone', ['tiny_openclip', 'mini'])
def test_cocoop_context_shift_matches_authors(backbone):
    "ctx_shifted = ctx + meta_net(normalised image feature), the same bias on every context token."
    model = tiny_clip() if backbone == 'tiny_openclip' else load_clip('mini', device='cpu')[0]
    strat, emb, meta, weight, feats = setup(model)
    img = F.normalize(feats, dim=-1)
    tokens = model.tokenizer([strat.template(model).replace('{}', c) for c in CLASSNAMES])
    C = len(tokens)
    rows = tokens.repeat(len(img), 1)
    with torch.no_grad(), emb.conditioned(img.repeat_interleave(C, 0)):
        lib_ctx = emb.contexts(rows, torch.arange(len(rows))).view(len(img), C, emb.n_ctx, -1)
        lib_emb = emb(rows).view(len(img), C, *emb(rows).shape[1:])
    with torch.no_grad():
        bias = meta(img).unsqueeze(1)
        a_ctx = emb.ctx.unsqueeze(0) + bias
        a_tok = model.tokenizer([f'a photo of a {c}.' for c in CLASSNAMES])  # prompt_prefix = ctx_init (L83-86, L103)
        e = F.embedding(a_tok, weight)
        a_prompts = authors_prompts(meta, emb.ctx, e[:, :1], e[:, 1 + emb.n_ctx:], img)
    torch.testing.assert_close(lib_ctx, a_ctx[:, None].expand(-1, C, -1, -1), **TOL)
    torch.testing.assert_close(lib_emb, a_prompts, **TOL)


@pytest.mark.parametrize('backbone', ['tiny_openclip', 'mini'])
def test_cocoop_logits_match_authors(backbone):
    "The logits of the library's evaluation head and of `conditional_logits` against the authors' CustomCLIP.forward."
    model = tiny_clip() if backbone == 'tiny_openclip' else load_clip('mini', device='cpu')[0]
    strat, emb, meta, weight, feats = setup(model, seed=1)
    tokens = model.tokenizer([strat.template(model).replace('{}', c) for c in CLASSNAMES])
    with torch.no_grad():
        a_tok = model.tokenizer([f'a photo of a {c}.' for c in CLASSNAMES])
        expected = authors_logits(model, meta, emb.ctx, weight, a_tok, feats)
        img = F.normalize(feats, dim=-1)
        head = strat.class_head(model, model.tokenizer, SimpleNamespace(classnames=CLASSNAMES))
        got_head = head(img)
        got = conditional_logits(model, img, tokens, lambda t: F.normalize(model.encode_text(t), dim=-1), model.logit_scale.exp())
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(got_head, expected, **TOL)


def test_cocoop_meta_net_gradient_matches_authors():
    "Training: the cross-entropy gradients of ctx and of the meta-net match the authors' forward (L185-186)."
    model = tiny_clip()
    strat, emb, meta, weight, feats = setup(model, seed=2)
    labels = torch.tensor([0, 2, 1])
    tokens = model.tokenizer([strat.template(model).replace('{}', c) for c in CLASSNAMES])
    img = F.normalize(feats, dim=-1)
    got = conditional_logits(model, img, tokens, lambda t: F.normalize(model.encode_text(t), dim=-1), model.logit_scale.exp())
    F.cross_entropy(got, labels).backward()
    a_ctx = emb.ctx.detach().clone().requires_grad_(True)
    a_tok = model.tokenizer([f'a photo of a {c}.' for c in CLASSNAMES])
    F.cross_entropy(authors_logits(model, meta, a_ctx, weight, a_tok, feats), labels).backward()
    torch.testing.assert_close(emb.ctx.grad, a_ctx.grad, **TOL)
    for (n, p), (_, q) in zip(emb.meta_net.named_parameters(), meta.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=n)
