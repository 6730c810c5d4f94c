"""Fidelity: Tip-Adapter-F's training step and Tip-Adapter's per-dataset search grids, transcribed from the authors' code,
vs `clip_strategies.tip`.

Authors' code: gaopengcuhk/Tip-Adapter @ d0e2d6f8 (alias `Tip` in /work/shared/RECIPES.md §0; the copy read for this
test is commit 327763e3, the same lines). RECIPES.md §1.5:
  * Tip-F: Tip:main.py#L68-110 (`run_tip_adapter_F`): the keys are a bias-free `nn.Linear(D, M)` whose weight is
    `cache_keys.t()` (the authors keep `cache_keys` as `[D, M]`), `optimizer = torch.optim.AdamW(adapter.parameters(),
    lr=cfg['lr'], eps=1e-4)` (torch's default betas and weight decay 0.01), `scheduler = CosineAnnealingLR(optimizer,
    cfg['train_epoch'] * len(train_loader_F))` stepped after every batch, `beta, alpha = cfg['init_beta'], cfg['init_alpha']`;
    per batch: `affinity = adapter(image_features)`, `cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values`,
    `clip_logits = 100. * image_features @ clip_weights`, `tip_logits = clip_logits + cache_logits * alpha`,
    `loss = F.cross_entropy(tip_logits, target)`, then `zero_grad`, `backward`, `optimizer.step()`, `scheduler.step()`.
  * The grids: Tip:utils.py#L99-129 (`search_hp`), `i * (search_scale - 0.1) / search_step + 0.1` for `i < search_step`,
    with each dataset's `search_scale` / `search_step` from Tip:configs/<dataset>.yaml#L17-18 (RECIPES.md §2.2).
The authors' loop runs in CLIP's dtype (fp16 on a GPU); the transcription here runs in float64 and the library in
float32 (a deviation the library documents). Nothing here is copied into the library.
"""
import math
import pytest, torch
import torch.nn.functional as F
from torch import nn
from clip_strategies.tip import TipAdapter, AugmentedPasses, finetune_keys, search_grid, tip_settings, Tip
from clip_strategies.tables import COOP_DATASETS

TOL = 1e-5

# ---- transcription of the authors' code -------------------------------------------------------------------------------
def ref_tip_f(cache_keys, cache_values, clip_weights, batches, beta, alpha, lr, train_epoch):
    "Tip:main.py#L68-110, the training part: `batches` is the list of (image_features, target) of the epochs, in order."
    adapter = nn.Linear(cache_keys.shape[0], cache_keys.shape[1], bias=False).to(cache_keys.dtype)
    adapter.weight = nn.Parameter(cache_keys.t())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, train_epoch * (len(batches) // train_epoch))
    lrs = []
    for image_features, target in batches:
        lrs.append(optimizer.param_groups[0]['lr'])
        affinity = adapter(image_features)
        cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
        clip_logits = 100. * image_features @ clip_weights
        tip_logits = clip_logits + cache_logits * alpha
        loss = F.cross_entropy(tip_logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return adapter.weight.detach().t(), lrs  # back to the authors' `[D, M]` keys

def ref_grid(search_scale, search_step):
    "Tip:utils.py#L99-129, the two list comprehensions at the top of `search_hp`."
    beta_list = [i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in range(search_step[0])]
    alpha_list = [i * (search_scale[1] - 0.1) / search_step[1] + 0.1 for i in range(search_step[1])]
    return beta_list, alpha_list

# Tip:configs/<file>.yaml#L17-21 as RECIPES.md §2.2 lists them: init_beta, init_alpha, search_scale, search_step
AUTHORS_CONFIGS = {
    'caltech101': (1, 3, [12, 5], [200, 20]), 'dtd': (1, 2, [13, 13], [200, 20]), 'eurosat': (1, 2, [12, 10], [200, 20]),
    'fgvc_aircraft': (1, 5, [30, 30], [200, 20]), 'food101': (1, 1.17, [10, 10], [200, 20]), 'imagenet': (1, 1.17, [7, 3], [200, 20]),
    'flowers102': (1, 10, [50, 50], [200, 20]), 'oxford_pets': (1, 1.17, [7, 3], [200, 20]), 'stanford_cars': (1, 3, [20, 10], [200, 20]),
    'sun397': (1, 1.17, [12, 10], [200, 20]), 'ucf101': (1, 3, [7, 3], [200, 20])}

# ---- the comparisons --------------------------------------------------------------------------------------------------
def _setup(seed=0, n_cls=5, shots=8, d=32):
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n_cls, d, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.arange(n_cls).repeat_interleave(shots)
    keys = F.normalize(text[labels] + 0.8 * torch.randn(len(labels), d, generator=g, dtype=torch.float64), dim=-1)
    feats = F.normalize(text[labels] + 0.8 * torch.randn(len(labels), d, generator=g, dtype=torch.float64), dim=-1)  # one augmented pass
    return text, keys, labels, feats

@pytest.mark.parametrize('batch_size, beta, alpha, lr', [(40, 1.0, 3.0, 1e-3), (16, 5.5, 1.17, 1e-2), (8, 2.0, 10.0, 1e-3)])
def test_tip_f_steps_match_authors(batch_size, beta, alpha, lr):
    "One epoch of Tip-F on random features — one step (batch 40) or several under the per-step cosine — against the transcription."
    text, keys, labels, feats = _setup()
    seed = 3
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).split(batch_size)  # the library's batch order
    batches = [(feats[i], labels[i]) for i in order]
    ref_keys, ref_lrs = ref_tip_f(keys.t().clone(), F.one_hot(labels).double(), text.t(), batches, beta, alpha, lr, train_epoch=1)
    ad = TipAdapter(text.float(), keys.float(), labels, alpha=alpha, beta=beta)
    val = feats[:10].float(), labels[:10]  # one epoch: the only trained epoch is kept, whatever it scores
    finetune_keys(ad, AugmentedPasses(feats.float()[None], labels), *val, epochs=1, lr=lr, batch_size=batch_size, seed=seed)
    assert not torch.allclose(ref_keys.t(), keys, atol=1e-4)  # the keys moved: a real comparison
    torch.testing.assert_close(ad.cache_keys.double(), ref_keys.t(), rtol=TOL, atol=TOL)
    from clip_strategies.optim import scheduled_lr  # the per-step cosine the Learner applies (no warm-up, to 0)
    torch.testing.assert_close(torch.tensor([scheduled_lr(t, lr, len(order)) for t in range(len(order))], dtype=torch.float64),
                               torch.tensor(ref_lrs, dtype=torch.float64), rtol=1e-12, atol=1e-15)

@pytest.mark.parametrize('dataset', COOP_DATASETS)
def test_each_datasets_grid_matches_authors(dataset):
    "The 11 configs: the strategy's init α, β and grid for the dataset are the authors' (RECIPES.md §2.2), the grid their formula."
    beta0, alpha0, scale, steps = AUTHORS_CONFIGS[dataset]
    s = tip_settings(dataset)
    assert (s['init_beta'], s['init_alpha'], s['search_scale'], s['search_step']) == (beta0, alpha0, scale, steps)
    class Named(torch.utils.data.Dataset): name = dataset
    assert Tip().run_settings(Named()) == dict(alpha=alpha0, beta=beta0, search_scale=scale, search_step=steps)
    betas, alphas = ref_grid(scale, steps)
    b, a = search_grid(s['search_scale'], s['search_step'])
    torch.testing.assert_close(b, torch.tensor(betas, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(a, torch.tensor(alphas, dtype=torch.float64), rtol=0, atol=1e-12)

def test_caltech_grid_is_the_one_recipes_quotes():
    "RECIPES.md §2.2: caltech β ∈ {0.1, 0.1595, …, 11.94} (200 values), α ∈ {0.1, 0.345, …, 4.755} (20 values)."
    b, a = search_grid(tip_settings('caltech101')['search_scale'], tip_settings('caltech101')['search_step'])
    assert (len(b), len(a)) == (200, 20)
    assert [round(float(x), 4) for x in (b[0], b[1], b[-1])] == [0.1, 0.1595, 11.9405]
    assert [round(float(x), 3) for x in (a[0], a[1], a[-1])] == [0.1, 0.345, 4.755]
