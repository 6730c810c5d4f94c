"""Fidelity of CoOp's prompt assembly against a transcription of the authors' math (KaiyangZhou/CoOp).

The authors' code is not imported (it needs Dassl and OpenAI's `clip`): the few lines that matter are transcribed below
and cited. Line numbers are those of KaiyangZhou/CoOp `trainers/coop.py` at the commit stored by the search tool
(1e5ec09f); /work/shared/RECIPES.md §1.1 cites the same code at ff61507c (CoOp:trainers/coop.py#L72-96, #L98-100).
"""
import open_clip
import pytest
import torch
import torch.nn.functional as F

import clip_strategies.prompt  # registers coop
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.prompt import prompt_embedding, token_ids
from clip_strategies.strategy import get_strategy
from tiny_backbones import tiny_clip

torch.set_num_threads(1)
CLASSNAMES = ['dog', 'sea lion', 'red panda bear']
TOL = dict(atol=1e-5, rtol=1e-5)




# ---- transcription of the authors' code -------------------------------------------------------------------------------
def authors_tokenized_prompts(tokenizer, classnames, prompt_prefix):
    # CoOp:trainers/coop.py PromptLearner.__init__ L99-103: prompts = [prompt_prefix + " " + name + "." ...]; clip.tokenize
    return tokenizer([prompt_prefix + ' ' + name.replace('_', ' ') + '.' for name in classnames])


def authors_prompts(token_weight, tokenized_prompts, ctx, n_ctx, name_lens, class_token_position):
    "CoOp:trainers/coop.py PromptLearner.__init__ L103-111 (token_prefix = SOS, token_suffix = CLS . EOS) and forward L119-183."
    embedding = F.embedding(tokenized_prompts, token_weight)      # clip_model.token_embedding(tokenized_prompts)
    prefix, suffix = embedding[:, :1, :], embedding[:, 1 + n_ctx:, :]
    n_cls = len(tokenized_prompts)
    if ctx.dim() == 2: ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    if class_token_position == 'end':
        return torch.cat([prefix, ctx, suffix], dim=1)
    prompts = []
    for i in range(n_cls):
        name_len = name_lens[i]
        prefix_i, class_i, suffix_i = prefix[i:i + 1], suffix[i:i + 1, :name_len], suffix[i:i + 1, name_len:]
        if class_token_position == 'middle':
            half_n_ctx = n_ctx // 2
            prompts.append(torch.cat([prefix_i, ctx[i:i + 1, :half_n_ctx], class_i, ctx[i:i + 1, half_n_ctx:], suffix_i], dim=1))
        elif class_token_position == 'front':
            prompts.append(torch.cat([prefix_i, class_i, ctx[i:i + 1], suffix_i], dim=1))
        else: raise ValueError
    return torch.cat(prompts, dim=0)


def authors_text_encoder(model, prompts, tokenized_prompts):
    "CoOp:trainers/coop.py TextEncoder.forward L45-56."
    x = prompts + model.positional_embedding
    # the authors permute NLD -> LND for OpenAI's sequence-first Transformer whose causal mask is built in;
    # open_clip's blocks here are batch-first and take the same causal mask explicitly: the same math.
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    # "take features from the eot embedding (eot_token is the highest number in each sequence)"
    return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ model.text_projection


# ---- the comparisons -------------------------------------------------------------------------------------------------
def library_and_authors(model, n_ctx, position, csc, ctx_init=None, randomize=True, classnames=CLASSNAMES):
    "Apply the library's CoOp; return (library embedding, library features, authors' prompts, authors' features)."
    weight = model.token_embedding.weight.detach().clone()  # the stock table, before the library replaces the module
    opts = dict(class_token_position=position, csc=csc, classnames=classnames if csc else [])
    opts.update(dict(ctx_init=ctx_init) if ctx_init else dict(n_ctx=n_ctx))
    strat = get_strategy('coop', **opts)
    strat.apply(model)
    emb, tok = prompt_embedding(model), model.tokenizer
    if randomize:
        with torch.no_grad(): emb.ctx.normal_(0, 0.5)
    lib_tokens = tok([strat.template(model).replace('{}', c) for c in classnames])
    with torch.no_grad():
        lib_emb, lib_feat = emb(lib_tokens), model.encode_text(lib_tokens)
        prefix = ctx_init if ctx_init else ' '.join(['X'] * emb.n_ctx)
        a_tok = authors_tokenized_prompts(tok, classnames, prefix)
        name_lens = [len(token_ids(tok, c)) for c in classnames]  # len(_tokenizer.encode(name)), L100
        a_prompts = authors_prompts(weight, a_tok, emb.ctx.detach(), emb.n_ctx, name_lens, position)
        a_feat = authors_text_encoder(model, a_prompts, a_tok)
    return lib_emb, lib_feat, a_prompts, a_feat


@pytest.mark.parametrize('csc', [False, True], ids=['shared', 'class_specific'])
@pytest.mark.parametrize('position', ['end', 'middle', 'front'])
def test_coop_prompts_and_text_features_match_authors(position, csc):
    torch.manual_seed(0)
    lib_emb, lib_feat, a_prompts, a_feat = library_and_authors(tiny_clip(), 4, position, csc)
    assert lib_emb.shape == a_prompts.shape
    torch.testing.assert_close(lib_emb, a_prompts, **TOL)
    torch.testing.assert_close(lib_feat, a_feat, **TOL)


def test_coop_odd_n_ctx_middle_matches_authors():
    "n_ctx // 2 context vectors before the name, the rest after (L136-158), with an odd count."
    torch.manual_seed(1)
    lib_emb, lib_feat, a_prompts, a_feat = library_and_authors(tiny_clip(), 5, 'middle', False)
    torch.testing.assert_close(lib_emb, a_prompts, **TOL)
    torch.testing.assert_close(lib_feat, a_feat, **TOL)


def test_coop_ctx_init_matches_authors():
    "CTX_INIT: ctx = token embeddings of the phrase (L73-81) and prompts 'a photo of a <name>.' at initialisation."
    torch.manual_seed(2)
    model = tiny_clip()
    weight = model.token_embedding.weight.detach().clone()
    lib_emb, lib_feat, a_prompts, a_feat = library_and_authors(model, None, 'end', False, ctx_init='a photo of a', randomize=False)
    ctx_authors = F.embedding(model.tokenizer(['a photo of a']), weight)[0, 1:1 + 4]  # embedding[0, 1:1+n_ctx, :]
    torch.testing.assert_close(prompt_embedding(model).ctx.detach(), ctx_authors, **TOL)
    torch.testing.assert_close(lib_emb, a_prompts, **TOL)
    # and the authors' prompt embedding is that of the plain sentence "a photo of a <name>."
    plain = F.embedding(model.tokenizer([f'a photo of a {c}.' for c in CLASSNAMES]), weight)
    torch.testing.assert_close(a_prompts, plain, **TOL)
    torch.testing.assert_close(lib_feat, a_feat, **TOL)


def test_coop_end_on_the_mini_backbone():
    "The same comparison on the project's own tiny CLIP ('mini', its own BPE), class name at the end."
    torch.manual_seed(3)
    model = load_clip('mini', device='cpu')[0]
    lib_emb, lib_feat, a_prompts, a_feat = library_and_authors(model, 4, 'end', False)
    torch.testing.assert_close(lib_emb, a_prompts, **TOL)
    torch.testing.assert_close(lib_feat, a_feat, **TOL)
