"""Fidelity of VPT (shallow and deep) against a transcription of the authors' prompt insertion
(KMnP/vpt `src/models/vit_prompt/vit.py`, PromptedTransformer.incorporate_prompt and forward_deep_prompt; /work/shared/RECIPES.md
§1.11 notes that repo has no CLIP code, so its line numbers were not recorded there).

Authors' math (ViT with a class token, prompt_proj = Identity as in their default, prompt dropout off in eval):
  shallow: x = cat(x[:, :1], dropout(prompts).expand(B, -1, -1), x[:, 1:]) once, before the first block;
  deep:    at block i > 0, hidden = cat(hidden[:, :1], dropout(deep_prompts[i-1]), hidden[:, 1 + n_tokens:]);
  head:    encoder_norm, then the class token.
Their ViT has no `ln_pre`; in CLIP the library inserts the prompts after `ln_pre` (the input of the first block), which is
where the transcription below inserts them too.
"""
import open_clip
import pytest
import torch
import torch.nn.functional as F

import clip_strategies.prompt  # registers vpt
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip as _tiny

def tiny_clip(): return _tiny(vision_layers=3)  # deep prompts need more than two blocks to show

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=1e-5)




# ---- transcription of the authors' code (around a stock CLIP image tower) ------------------------------------------------
def clip_embeddings(vis, images):
    "CLIP's patch + class + position embeddings and ln_pre (open_clip VisionTransformer.forward, before the blocks)."
    x = vis.conv1(images).flatten(2).transpose(1, 2)
    cls = vis.class_embedding.to(x.dtype).expand(len(x), 1, -1)
    x = torch.cat([cls, x], 1) + vis.positional_embedding
    return vis.ln_pre(x)


def authors_vpt_image_features(vis, blocks, images, prompts, deep):
    """KMnP/vpt vit.py: incorporate_prompt (shallow insert after the class token) and forward_deep_prompt
    (deep: replace the prompt tokens before every later block); then the norm and the class token."""
    x = clip_embeddings(vis, images)
    B, n = len(x), prompts.shape[1]
    # incorporate_prompt: cat((x[:, :1, :], prompt_dropout(prompt_proj(prompt_embeddings).expand(B, -1, -1)), x[:, 1:, :]), dim=1)
    hidden = torch.cat([x[:, :1], prompts[0].expand(B, -1, -1), x[:, 1:]], dim=1)
    for i, blk in enumerate(blocks):
        if deep and i > 0:
            # forward_deep_prompt: deep_prompt_emb = prompt_dropout(prompt_proj(deep_prompt_embeddings[i-1]).expand(B, -1, -1))
            hidden = torch.cat([hidden[:, :1], prompts[i].expand(B, -1, -1), hidden[:, 1 + n:]], dim=1)
        hidden = blk(hidden)
    hidden = vis.ln_post(hidden)              # encoder_norm
    return hidden[:, 0] @ vis.proj            # the class token, through CLIP's projection


# ---- the comparisons -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('deep', [False, True], ids=['shallow', 'deep'])
@pytest.mark.parametrize('backbone', ['tiny_openclip', 'mini'])
def test_vpt_image_features_match_authors(backbone, deep):
    torch.manual_seed(0)
    model = tiny_clip() if backbone == 'tiny_openclip' else load_clip('mini', device='cpu')[0]
    stock_blocks = list(model.visual.transformer.resblocks)
    get_strategy('vpt', n_tokens=3, deep=deep).apply(model)
    model.eval()
    pt = model.visual.transformer
    assert pt.prompts.shape == (len(stock_blocks) if deep else 1, 3, pt.width)
    with torch.no_grad(): pt.prompts.normal_(0, 1.)  # a trained-looking prompt
    images = torch.randn(2, 3, *model.visual.image_size)
    with torch.no_grad():
        got = model.encode_image(images)
        want = authors_vpt_image_features(model.visual, stock_blocks, images, pt.prompts, deep)
    torch.testing.assert_close(got, want, **TOL)
    # the prompts matter (the comparison is not vacuous); a shift, not a scale: ln_1 makes a deep prompt's scale irrelevant
    with torch.no_grad(): pt.prompts.add_(torch.randn_like(pt.prompts))
    with torch.no_grad(): assert not torch.allclose(model.encode_image(images), got, atol=1e-4)


def test_vpt_deep_gradients_match_authors():
    "Training with prompt dropout 0: the gradient of every block's prompts matches the transcription's."
    torch.manual_seed(1)
    model = tiny_clip()
    stock_blocks = list(model.visual.transformer.resblocks)
    get_strategy('vpt', n_tokens=2, deep=True).apply(model)
    model.train()
    pt = model.visual.transformer
    images = torch.randn(2, 3, 32, 32)
    model.encode_image(images).pow(2).sum().backward()
    mine = pt.prompts.detach().clone().requires_grad_(True)
    authors_vpt_image_features(model.visual, stock_blocks, images, mine, True).pow(2).sum().backward()
    torch.testing.assert_close(pt.prompts.grad, mine.grad, **TOL)
