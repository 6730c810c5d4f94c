"""MaPLe's prompt construction and coupling, transcribed from the authors' code (muzairkhattak/multimodal-prompt-learning,
RECIPES.md §1.8), against `clip_strategies.maple` on a tiny open_clip CLIP.

Transcribed (math only):
- trainers/maple.py#L84-97 (MultiModalPromptLearner.__init__): ctx = token_embedding(tokenize(ctx_init))[0, 1:1+n_ctx];
  prompts are "<ctx_init> <class>." (#L121-131); #L103-117: proj = Linear(ctx_dim, 768); compound_prompts_text = depth-1
  tensors [n_ctx, 512] ~ N(0, 0.02); compound_prompt_projections = _get_clones(one Linear(ctx_dim, 768), depth-1).
- trainers/maple.py#L155-173 (forward): prompts = cat(prefix, ctx, suffix); vision prompt of layer 0 = proj(ctx);
  of deeper layers = compound_prompt_projections[i](compound_prompts_text[i]).
- clip/model.py VisionTransformer_MaPLe.forward: x = [cls, patches] + pos; x = cat(x, shared_ctx); ln_pre; blocks.
- clip/model.py ResidualAttentionBlock_MaPLe.forward: for every layer but the first, while counter < len(deeper):
  vision: x = cat(x[:-n_ctx], deeper[counter]); text: x = cat(x[:1], deeper[counter], x[1+n_ctx:]); counter += 1.
- trainers/maple.py TextEncoder.forward (#L43-66): x = prompts + pos; blocks; ln_final; x[eot] @ text_projection."""
import torch
import pytest
from tiny_backbones import tiny_clip
from clip_strategies.strategy import get_strategy

def authors_vision(visual, images, shared_ctx, deeper):
    "VisionTransformer_MaPLe.forward with ResidualAttentionBlock_MaPLe, batch first."
    n = shared_ctx.shape[0]
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(len(x), 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(torch.cat([x, shared_ctx.expand(len(x), -1, -1)], 1))
    for i, block in enumerate(visual.transformer.resblocks):
        if i > 0 and i - 1 < len(deeper): x = torch.cat([x[:, :-n], deeper[i - 1].expand(len(x), -1, -1)], 1)
        x = block(x)
    return visual.ln_post(x[:, 0]) @ visual.proj

def authors_text(model, tokens, ctx, deeper):
    "TextEncoder.forward on prompts = cat(SOS, ctx, suffix), with the deeper text prompts replacing tokens 1..n."
    n, emb = ctx.shape[0], model.token_embedding.weight[tokens]
    x = torch.cat([emb[:, :1], ctx.expand(len(emb), -1, -1), emb[:, 1 + n:]], 1) + model.positional_embedding
    for i, block in enumerate(model.transformer.resblocks):
        if i > 0 and i - 1 < len(deeper): x = torch.cat([x[:, :1], deeper[i - 1].expand(len(x), -1, -1), x[:, 1 + n:]], 1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(len(x)), tokens.argmax(-1)] @ model.text_projection

def authors_logits(model, p, images, tokens):
    "CustomCLIP.forward (#L185-200): both encoders with the prompt learner's outputs, cosine logits times exp(logit_scale)."
    deeper_vis = [proj(t) for proj, t in zip(p.compound_prompt_projections, p.compound_prompts_text)]
    img = authors_vision(model.visual, images, p.proj(p.ctx), deeper_vis)
    txt = authors_text(model, tokens, p.ctx, list(p.compound_prompts_text))
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return model.logit_scale.exp() * img @ txt.T

@pytest.mark.parametrize('depth', [1, 2])
def test_logits_match_the_authors_forward(depth):
    torch.manual_seed(0)
    model = tiny_clip(vision_layers=3)
    s = get_strategy('maple', prompt_depth=depth)
    s.apply(model)
    with torch.no_grad():  # trained-looking prompts: move every learned tensor off its initial value
        for q in model.maple.parameters(): q.add_(torch.randn_like(q) * 0.1)
    tokens = model.tokenizer([s.template().format(c) for c in ('cat', 'dog', 'sea turtle')])
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        i, t, scale = model(images, tokens)[:3]
        ours = scale * i @ t.T
        theirs = authors_logits(model, model.maple, images, tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

def test_initialisation_follows_the_authors():
    torch.manual_seed(0)
    model = tiny_clip()
    s = get_strategy('maple', n_ctx=2, prompt_depth=2, ctx_init='a photo of a')
    s.apply(model)
    p = model.maple
    want = model.token_embedding.weight[model.tokenizer(['a photo of a'])[0, 1:3]]  # embedding[0, 1:1+n_ctx]
    torch.testing.assert_close(p.ctx.detach(), want.detach())
    assert s.template() == 'a photo of a {}.'  # prompt_prefix = ctx_init, "of a" stays fixed text
    assert p.proj.in_features == 64 and p.proj.out_features == 64  # Linear(ctx_dim, vision width)
    assert [tuple(t.shape) for t in p.compound_prompts_text] == [(2, 64)]
    assert 0.01 < float(p.compound_prompts_text[0].std()) < 0.03  # N(0, 0.02) (128 numbers)
    torch.testing.assert_close(p.vision_prompt(1), p.compound_prompt_projections[0](p.compound_prompts_text[0]))
    torch.testing.assert_close(p.vision_prompt(0), p.proj(p.ctx))  # layer 0: the word context, projected
