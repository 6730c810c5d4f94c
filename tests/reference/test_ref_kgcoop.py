"""Fidelity of KgCoOp's loss against a transcription of the authors' code (htyao89/KgCoOp at c43ccc32; /work/shared/RECIPES.md
§1.3): KgCoOp:KgCoOp/trainers/kgcoop.py#L236-243 (CustomCLIP.forward: the logits and the knowledge score), #L309-311
(forward_backward: loss = CE + W · score), and the frozen features of #L131-146 from the per-dataset CUSTOM_TEMPLATES of
#L37-54 (RECIPES.md §2.1). The prompt assembly is CoOp's (tests/reference/test_ref_coop.py checks it on its own)."""
import copy

import pytest
import torch
import torch.nn.functional as F

import clip_strategies.prompt  # registers kgcoop
from clip_strategies.learner import Learner, dataloaders
from clip_strategies.objectives import TextHeadClassification
from clip_strategies.prompt import prompt_embedding
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip

torch.set_num_threads(1)
CLASSNAMES = ['banded', 'cracked', 'woven_fabric']
TOL = dict(atol=1e-5, rtol=1e-5)


# ---- transcription of the authors' code -------------------------------------------------------------------------------
CUSTOM_TEMPLATES = {  # KgCoOp:KgCoOp/trainers/kgcoop.py#L37-54 (three of its rows)
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
}


def authors_frozen_text_features(clip_model_, classnames, dataset_name):
    "KgCoOp:KgCoOp/trainers/kgcoop.py#L131-146: a second, frozen CLIP encodes the dataset's hand-written template."
    temp = CUSTOM_TEMPLATES[dataset_name]
    prompts_ = [temp.format(c.replace("_", " ")) for c in classnames]
    prompts_ = clip_model_.tokenizer(prompts_)  # torch.cat([clip.tokenize(p) for p in prompts_])
    with torch.no_grad():
        text_features = clip_model_.encode_text(prompts_)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return text_features


def authors_learned_text_features(clip_model, ctx, classnames):
    "PromptLearner (CTX_INIT: prompt_prefix 'a photo of a', #L94-130: [SOS][ctx][CLASS . EOS]) and TextEncoder.forward."
    n_ctx = ctx.shape[0]
    tokenized_prompts = clip_model.tokenizer(["a photo of a" + " " + name.replace("_", " ") + "." for name in classnames])
    embedding = F.embedding(tokenized_prompts, clip_model.token_embedding.weight)
    prompts = torch.cat([embedding[:, :1], ctx.unsqueeze(0).expand(len(classnames), -1, -1), embedding[:, 1 + n_ctx:]], dim=1)
    x = clip_model.transformer(prompts + clip_model.positional_embedding, attn_mask=clip_model.attn_mask)  # batch-first open_clip
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ clip_model.text_projection


def authors_loss(image_features, text_features, text_features_old, logit_scale, label, w):
    "KgCoOp:KgCoOp/trainers/kgcoop.py#L236-243 (CustomCLIP.forward) and #L309-311 (forward_backward)."
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = logit_scale.exp() * image_features @ text_features.t()
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)
    text_features_old = text_features_old / text_features_old.norm(dim=-1, keepdim=True)
    score = cos(text_features, text_features_old)
    score = 1.0 - torch.mean(score)
    return F.cross_entropy(logits, label) + w * score


# ---- the comparison --------------------------------------------------------------------------------------------------
class Images(torch.utils.data.Dataset):
    "A few images of a named dataset (the library reads KgCoOp's template off the training data's name)."
    def __init__(self, x, y, name): self.x, self.y, self.name, self.classnames = x, y, name, [c.replace('_', ' ') for c in CLASSNAMES]
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], self.y[i]


def library_loss(model, ds, w):
    "The library's training loss and its gradient on the context, for one batch of all of `ds`."
    strat = get_strategy('kgcoop', w=w)  # context from 'a photo of a', hand_template: KgCoOp's for the dataset
    strat.apply(model)
    emb = prompt_embedding(model)
    with torch.no_grad(): emb.ctx.add_(torch.randn_like(emb.ctx) * 0.2)  # a trained-looking context
    obj = strat.objective(model, TextHeadClassification(model.tokenizer, ds.classnames, ['{} texture.']))
    learn = Learner(model, dataloaders(ds, batch_size=len(ds)), obj)
    obj.before_fit(learn)
    learn.training, learn.batch = True, (ds.x, ds.y)
    learn.predict(); learn.get_loss()
    learn.loss.backward()
    return learn.loss.detach(), emb.ctx.detach().clone(), emb.ctx.grad.clone()


@pytest.mark.parametrize('name,dassl_name', [('dtd', 'DescribableTextures'), ('eurosat', 'EuroSAT'), ('stanford_cars', 'StanfordCars')])
def test_kgcoop_loss_matches_authors(name, dassl_name):
    "CE + W·(1 − mean cos(learned, frozen text features of the dataset's KgCoOp template)): value and gradient on the context."
    torch.manual_seed(0)
    model = tiny_clip()
    pristine = copy.deepcopy(model)  # the authors' clip_model_ (and the frozen towers of clip_model)
    ds = Images(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 2, 1, 0]), name)
    lib, ctx, lib_grad = library_loss(model, ds, w=8.)
    ctx = ctx.requires_grad_()
    image_features = pristine.encode_image(ds.x).detach()
    expected = authors_loss(image_features, authors_learned_text_features(pristine, ctx, CLASSNAMES),
                            authors_frozen_text_features(pristine, CLASSNAMES, dassl_name), pristine.logit_scale, ds.y, 8.)
    expected.backward()
    torch.testing.assert_close(lib, expected.detach(), **TOL)
    torch.testing.assert_close(lib_grad, ctx.grad, **TOL)


def test_kgcoop_dataset_outside_the_table_keeps_the_plain_prompt():
    "A dataset of yours (the mini lab's) keeps 'a photo of a {}.', the row StanfordCars has: the same loss as there."
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 2, 1, 0])
    torch.manual_seed(1); mine = library_loss(tiny_clip(), Images(x, y, 'mini_shift'), w=8.)[0]
    torch.manual_seed(1); cars = library_loss(tiny_clip(), Images(x, y, 'stanford_cars'), w=8.)[0]
    torch.manual_seed(1); dtd = library_loss(tiny_clip(), Images(x, y, 'dtd'), w=8.)[0]
    torch.testing.assert_close(mine, cars, **TOL)
    assert (mine - dtd).abs() > 1e-4  # the template matters to the loss
