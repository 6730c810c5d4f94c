"""Fidelity of PromptSRC against a transcription of the authors' code (muzairkhattak/PromptSRC at bb95c77b; /work/shared/RECIPES.md
§1.9, §2.5): the loss terms of PSRC:trainers/promptsrc.py#L297-313 (forward_backward) on the features of #L185-205
(CustomCLIP.forward) and the teacher text features of #L116-128 over IMAGENET_TEMPLATES (PSRC:trainers/imagenet_templates.py#L3-64);
GPA's weights and sum of #L263-270, #L320-335, #L338-360; and the IVLP deep prompts of PSRC:clip/model.py#L229-256
(ResidualAttentionBlock_IVLP.forward), #L394-424 (VisionTransformer.forward) and trainers/promptsrc.py#L58-69, #L140-170 (TextEncoder,
VLPromptLearner.construct_prompts), compared with clip_strategies.promptsrc's hooks on a tiny open_clip CLIP."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset, DataLoader

from clip_strategies.learner import Learner, DataLoaders
from clip_strategies.objectives import HeadClassification
from clip_strategies.promptsrc import (promptsrc_losses, gpa_weights, GPACB, teacher_text_features, PROMPTSRC_TEMPLATES, unprompted)
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=1e-5)


# ---- transcription of the authors' code -------------------------------------------------------------------------------
IMAGENET_TEMPLATES = [  # PSRC:trainers/imagenet_templates.py#L3-64
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
]


def authors_scl_losses(normalized_text_features, zs_clip_text_embeddings, image_ft, zs_image_embedd, logits, zero_shot_logits,
                       text_loss_weight=25, image_loss_weight=10):
    "PSRC:trainers/promptsrc.py#L297-313 (forward_backward, the fp16/fp32 branch): the three weighted terms."
    loss_scl_text = F.l1_loss(normalized_text_features, zs_clip_text_embeddings, reduction='mean') * text_loss_weight
    loss_scl_image = F.l1_loss(image_ft, zs_image_embedd, reduction='mean') * image_loss_weight
    L_SCL_logits = F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zero_shot_logits / 1, dim=1),
                            reduction='sum', log_target=True) * (1 * 1) / logits.numel()
    return loss_scl_text, loss_scl_image, L_SCL_logits


def authors_teacher(clip_model_temp, classnames):
    "PSRC:trainers/promptsrc.py#L116-128 (mean of unnormalised encode_text over the templates) and #L199-200 (then normalised)."
    all_teacher_features = []
    with torch.no_grad():
        for single_template in IMAGENET_TEMPLATES:
            x = [single_template.replace("{}", name) for name in classnames]
            x_tokenized = clip_model_temp.tokenizer(x)  # torch.cat([clip.tokenize(p) for p in x])
            text_features = clip_model_temp.encode_text(x_tokenized)
            all_teacher_features.append(text_features.unsqueeze(1))
    fixed_embeddings = torch.cat(all_teacher_features, dim=1).mean(dim=1)
    return fixed_embeddings / fixed_embeddings.norm(dim=-1, keepdim=True)


def authors_gauss(mean, stdev, N):
    "PSRC:trainers/promptsrc.py#L265-270 with get_gauss of #L358-360."
    gauss = lambda x: (1 / (stdev * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mean) / stdev) ** 2)
    g = np.array([gauss(a) for a in range(1, N + 1)])
    return g / sum(g)


def authors_gpa(state_dicts, gauss):
    "PSRC:trainers/promptsrc.py#L320-335 with state_dict_weighting / state_dict_add of #L338-356: after each epoch, sum w·state."
    previous_model_gpa = None
    for step, current_model_weights in enumerate(state_dicts):
        weighted_state_dict = {k: v * gauss[step] for k, v in current_model_weights.items()}
        if previous_model_gpa is None: previous_model_gpa = weighted_state_dict
        else: previous_model_gpa = {k: previous_model_gpa[k] + weighted_state_dict[k] for k in weighted_state_dict}
    return previous_model_gpa


def ivlp_block(blk, x, add_prompt, ctx, text_layer, attn_mask=None):
    "PSRC:clip/model.py#L229-256 (ResidualAttentionBlock_IVLP.forward), batch-first, on open_clip's block weights."
    if add_prompt:
        n = ctx.shape[0]
        if not text_layer: x = torch.cat([x[:, 0:x.shape[1] - n], ctx.expand(x.shape[0], -1, -1)], dim=1)
        else: x = torch.cat([x[:, :1], ctx.expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
    h = blk.ln_1(x)
    x = x + blk.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    return x + blk.mlp(blk.ln_2(x))


def authors_encode_image(visual, image, VPT, deeper):
    "PSRC:clip/model.py#L394-424 (VisionTransformer.forward; deeper[i-1] is block i's VPT_shallow, #L210-221)."
    x = visual.conv1(image).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = torch.cat([x, VPT.expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for i, blk in enumerate(visual.transformer.resblocks):
        x = ivlp_block(blk, x, 0 < i <= len(deeper), deeper[i - 1] if 0 < i <= len(deeper) else None, False)
    return visual.ln_post(x[:, 0, :]) @ visual.proj


def authors_encode_text(clip_model, ctx, deeper, classnames):
    "PSRC:trainers/promptsrc.py#L88-110,#L140-170 (prompts '[SOS] ctx name.'), TextEncoder #L58-69, IVLP text blocks."
    tokenized_prompts = clip_model.tokenizer(["a photo of a" + " " + name + "." for name in classnames])
    embedding = F.embedding(tokenized_prompts, clip_model.token_embedding.weight)
    n_ctx = ctx.shape[0]
    x = torch.cat([embedding[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), embedding[:, 1 + n_ctx:]], dim=1)
    x = x + clip_model.positional_embedding
    for i, blk in enumerate(clip_model.transformer.resblocks):
        x = ivlp_block(blk, x, 0 < i <= len(deeper), deeper[i - 1] if 0 < i <= len(deeper) else None, True, clip_model.attn_mask)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ clip_model.text_projection


# ---- comparisons ------------------------------------------------------------------------------------------------------
def test_loss_terms_match_the_authors():
    torch.manual_seed(0)
    t, tt, i, ti = (F.normalize(torch.randn(*s), dim=-1) for s in ((5, 8), (5, 8), (3, 8), (3, 8)))
    logits, zs = 20 * i @ t.t(), 20 * ti @ tt.t()
    ours = promptsrc_losses(t, tt, i, ti, logits, zs)
    text, image, kl = authors_scl_losses(t, tt, i, ti, logits, zs)
    torch.testing.assert_close(25 * ours['text'], text, **TOL)
    torch.testing.assert_close(10 * ours['image'], image, **TOL)
    torch.testing.assert_close(ours['logits'], kl, **TOL)
    assert not torch.isclose(ours['logits'], F.kl_div(F.log_softmax(zs, 1), F.log_softmax(logits, 1), reduction='sum', log_target=True) / logits.numel())  # direction matters


def test_teacher_templates_and_features_match_the_authors():
    assert len(IMAGENET_TEMPLATES) == len(PROMPTSRC_TEMPLATES) == 60 and set(IMAGENET_TEMPLATES) == set(PROMPTSRC_TEMPLATES)
    torch.manual_seed(0)
    m = tiny_clip()
    classnames = ['banded', 'cracked', 'woven fabric']
    torch.testing.assert_close(teacher_text_features(m, m.tokenizer, classnames), authors_teacher(m, classnames), **TOL)


@pytest.mark.parametrize('mean,std,n', [(30, 30, 50), (45, 5, 50), (15, 1, 20), (6, 10, 20), (7, 3, 10)])
def test_gpa_weights_match_the_authors(mean, std, n):
    np.testing.assert_allclose(gpa_weights(mean, std, n).numpy(), authors_gauss(mean, std, n), rtol=1e-12)


class Record(GPACB.__mro__[1]):  # a Callback: the state after each epoch's training, before GPA
    run_before = ('gpa',)
    def __init__(self): self.seen = []
    def after_train(self, learn): self.seen.append({k: v.clone() for k, v in learn.model.state_dict().items()})


def test_gpa_sum_matches_the_authors_on_four_epochs():
    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    model, rec = nn.Linear(4, 3), Record()
    learn = Learner(model, DataLoaders(dl, None), HeadClassification(), lr=0.3, epochs=4, cbs=[GPACB(3., 2.), rec])
    learn.opt_func = lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr)
    learn.fit()
    ref = authors_gpa(rec.seen, authors_gauss(3., 2., 4))
    for k, v in model.state_dict().items(): torch.testing.assert_close(v, ref[k].float(), rtol=0, atol=1e-6)


def test_deep_prompts_match_the_authors_ivlp_forward():
    torch.manual_seed(0)
    m = tiny_clip(vision_layers=3)
    s = get_strategy('promptsrc', prompt_depth_text=2, prompt_depth_vision=2)  # the third image block: prompts travel on
    s.apply(m)
    with torch.no_grad():
        for p in (m.transformer.promptsrc.prompts, m.visual.transformer.promptsrc.prompts): p.normal_(0, 0.5)
    tp, vp = m.transformer.promptsrc.prompts, m.visual.transformer.promptsrc.prompts
    classnames, images = ['banded', 'cracked', 'woven fabric'], torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours_t = m.encode_text(m.tokenizer([f'X X X X {c}.' for c in classnames]))
        ours_i = m.encode_image(images)
        with unprompted(m):  # the transcription calls the model's own modules (ln_pre...): their hooks stay silent
            ref_t, ref_i = authors_encode_text(m, tp[0], tp[1:], classnames), authors_encode_image(m.visual, images, vp[0], vp[1:])
            plain = m.encode_image(images)
    torch.testing.assert_close(ours_t, ref_t, **TOL)
    torch.testing.assert_close(ours_i, ref_i, **TOL)
    assert not torch.allclose(ours_i, plain, atol=1e-3)
