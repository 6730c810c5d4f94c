"""Fidelity of CoOp's prompt assembly against a transcription of the authors' math (KaiyangZhou/CoOp).

The authors' code is not imported (it needs Dassl and OpenAI's `clip`): the few lines that matter are transcribed below
and cited. Line numbers are those of KaiyangZhou/CoOp `trainers/coop.py` at the commit stored by the search tool
(1e5ec09f); /work/shared/RECIPES.md §1.1 cites the same code at ff61507c (CoOp:trainers/coop.py#L72-96, #L98-100).
The last section writes a file in the format CoOp's trainer saves (Dassl's save_checkpoint) and loads it into the library.
"""
import copy
from collections import OrderedDict

import open_clip
import pytest
import torch
import torch.nn.functional as F

from torch.optim.lr_scheduler import _LRScheduler, CosineAnnealingLR

import clip_strategies.prompt  # registers coop
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.prompt import prompt_embedding, token_ids, coop_from_checkpoint, load_coop_checkpoint, read_dassl_checkpoint
from clip_strategies.strategy import get_strategy, StrategyError
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


# ---- the authors' checkpoint format ------------------------------------------------------------------------------------
# Dassl:dassl/engine/trainer.py#L118-145 (save_model: {'state_dict', 'epoch', 'optimizer', 'scheduler', 'val_result'} of the
# prompt learner) and Dassl:dassl/utils/torchtools.py#L27-62 (torch.save to <output>/prompt_learner/model.pth.tar-<epoch>),
# at Dassl c61a1b57; the scheduler of Dassl:dassl/optim/lr_scheduler.py#L10-54, whose state_dict() keeps its `successor`
# (a CosineAnnealingLR object, with its optimiser); CoOp:trainers/coop.py#L293-325 (load_model reads state_dict['ctx'] and
# drops token_prefix / token_suffix). CoOp trains in fp16 (CoOp:trainers/coop.py#L229-231): its tensors are half.


class ConstantWarmupScheduler(_LRScheduler):
    "Dassl:dassl/optim/lr_scheduler.py#L10-54 (_BaseWarmupScheduler + ConstantWarmupScheduler), as far as its state goes."
    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr, self.successor, self.warmup_epoch = cons_lr, successor, warmup_epoch
        super().__init__(optimizer, last_epoch)
    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch: return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


def authors_checkpoint(directory, model, ctx, classnames, epoch=50):
    "The file CoOp's trainer writes after `epoch` epochs, with `ctx` as its context (fp16, as under PREC fp16)."
    n_ctx, emb = ctx.shape[-2], model.token_embedding.weight.detach()
    embedding = F.embedding(authors_tokenized_prompts(model.tokenizer, classnames, ' '.join(['X'] * n_ctx)), emb).half()
    param = torch.nn.Parameter(ctx.half())  # the prompt learner's ctx
    optim = torch.optim.SGD([param], lr=0.002, momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)
    sched = ConstantWarmupScheduler(optim, CosineAnnealingLR(optim, float(epoch)), 1, 1e-5)
    param.grad = torch.zeros_like(param); optim.step(); sched.step()  # the optimiser has momentum state, as after training
    state = {'state_dict': OrderedDict(ctx=param.data, token_prefix=embedding[:, :1], token_suffix=embedding[:, 1 + n_ctx:]),
             'epoch': epoch, 'optimizer': optim.state_dict(), 'scheduler': sched.state_dict(), 'val_result': None}
    path = directory/'prompt_learner'/f'model.pth.tar-{epoch}'
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


def logits(model, template, classnames, images):
    "logit_scale · cos(image, class prompt) of the adapted model."
    with torch.no_grad():
        txt = F.normalize(model.encode_text(model.tokenizer([template.replace('{}', c) for c in classnames])), dim=-1)
        return model.logit_scale.exp() * F.normalize(model.encode_image(images), dim=-1) @ txt.t()


@pytest.mark.parametrize('csc,position', [(False, 'end'), (True, 'middle')], ids=['shared_end', 'class_specific_middle'])
def test_coop_checkpoint_of_the_authors_loads_with_the_same_logits(tmp_path, csc, position):
    "A file in CoOp's format loads through weights-only reading; logits equal a coop whose ctx was set directly."
    torch.manual_seed(4)
    ctx = torch.randn(*([len(CLASSNAMES)] if csc else []), 4, 64) * 0.3
    path = authors_checkpoint(tmp_path, tiny_clip(), ctx, CLASSNAMES)
    torch.manual_seed(5)
    model = tiny_clip()
    direct = copy.deepcopy(model)  # the same backbone
    strat = coop_from_checkpoint(path, model, class_token_position=position, classnames=CLASSNAMES if csc else None)
    assert (strat.n_ctx, strat.csc, strat.class_token_position) == (4, csc, position)
    ref = get_strategy('coop', n_ctx=4, class_token_position=position, csc=csc, classnames=CLASSNAMES if csc else [])
    ref.apply(direct)
    with torch.no_grad(): prompt_embedding(direct).ctx.copy_(ctx.half().float())  # the file's values, as fp16 stored them
    images = torch.randn(5, 3, 32, 32)
    got, want = logits(model, strat.template(model), CLASSNAMES, images), logits(direct, ref.template(direct), CLASSNAMES, images)
    torch.testing.assert_close(got, want, **TOL)
    assert got.std() > 0.1  # the comparison is not between constants
    ck = read_dassl_checkpoint(path)
    assert ck['epoch'] == 50 and ck['state_dict']['ctx'].dtype == torch.float16 and 'successor' in ck['scheduler']


def test_coop_checkpoint_into_an_applied_coop_and_its_refusals(tmp_path):
    "load_coop_checkpoint fills a coop applied with the file's shape; another shape, or foreign objects, are refused."
    torch.manual_seed(6)
    ctx = torch.randn(4, 64)
    path = authors_checkpoint(tmp_path, tiny_clip(), ctx, CLASSNAMES)
    model = get_strategy('coop', n_ctx=4).apply(tiny_clip())
    load_coop_checkpoint(path, model)
    torch.testing.assert_close(prompt_embedding(model).ctx.detach(), ctx.half().float(), rtol=0, atol=0)
    with pytest.raises(StrategyError, match=r'apply coop with n_ctx=4'):
        load_coop_checkpoint(path, get_strategy('coop').apply(tiny_clip()))  # 16 context vectors
    with pytest.raises(ValueError, match='pass their classnames'):
        coop_from_checkpoint(authors_checkpoint(tmp_path/'csc', tiny_clip(), torch.randn(3, 4, 64), CLASSNAMES), tiny_clip())


class Payload:
    "An object whose unpickling would run code: it would create `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, 'w'))


def test_coop_checkpoint_never_runs_code_from_the_file(tmp_path):
    marker, path = tmp_path/'ran', tmp_path/'model.pth.tar-1'
    torch.save({'state_dict': {'ctx': torch.randn(4, 64)}, 'epoch': 1, 'optimizer': Payload(str(marker))}, path)
    with pytest.raises(ValueError, match='it is not unpickled'):
        load_coop_checkpoint(path, get_strategy('coop', n_ctx=4).apply(tiny_clip()))
    assert not marker.exists()


def test_cocoop_checkpoint_loads_the_meta_net(tmp_path):
    "CoCoOp's prompt learner file also holds meta_net.linear1/linear2 (CoOp:trainers/cocoop.py#L95-102): both load."
    torch.manual_seed(7)
    src = get_strategy('cocoop').apply(tiny_clip())
    emb = prompt_embedding(src)
    with torch.no_grad():
        for p in [emb.ctx, *emb.meta_net.parameters()]: p.add_(torch.randn_like(p))
    state = OrderedDict(ctx=emb.ctx.detach().half(), **{f'meta_net.{k}': v.half() for k, v in emb.meta_net.state_dict().items()})
    path = tmp_path/'model.pth.tar-10'
    torch.save({'state_dict': state, 'epoch': 10, 'optimizer': None, 'scheduler': None}, path)
    model = load_coop_checkpoint(path, get_strategy('cocoop').apply(tiny_clip()))
    got = prompt_embedding(model)
    torch.testing.assert_close(got.meta_net.linear2.weight, emb.meta_net.linear2.weight.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(got.ctx, emb.ctx.half().float(), rtol=0, atol=0)
