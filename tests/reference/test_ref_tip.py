"""Fidelity: Tip-Adapter's logits and alpha/beta search, transcribed from the authors' code, vs `clip_strategies.tip`.

Authors' code: gaopengcuhk/Tip-Adapter @ d0e2d6f8 (alias `Tip` in /work/shared/RECIPES.md §0; the copy read for this
test is commit 327763e3, same formulas). RECIPES.md §1.5:
  * logit formula: Tip:main.py#L37-44 (`clip_logits = 100. * val_features @ clip_weights`,
    `affinity = val_features @ cache_keys`, `cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values`,
    `tip_logits = clip_logits + cache_logits * alpha`). Note the authors keep `clip_weights` as `[D, C]` and
    `cache_keys` as `[D, M]` (transposed), `cache_values` = one_hot(labels).
  * HP search grid and loop: Tip:utils.py#L99-129 (`search_hp`): beta_list/alpha_list = i*(scale-0.1)/step + 0.1,
    i < step; loop beta outer, alpha inner; keep a pair only when `acc > best_acc` (strict, first maximum wins).
The functions below are transcriptions for the test only; nothing here is copied into the library.
"""
import pytest, torch
import torch.nn.functional as F
from clip_strategies.tip import TipAdapter, search, search_grid

TOL = 1e-5

def ref_tip_logits(features, clip_weights, cache_keys, cache_values, beta, alpha):
    "Tip:main.py#L37-44. clip_weights `[D, C]`, cache_keys `[D, M]`, cache_values `[M, C]` one-hot."
    clip_logits = 100. * features @ clip_weights
    affinity = features @ cache_keys
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
    return clip_logits + cache_logits * alpha

def ref_cls_acc(output, target, topk=1):
    "Tip:utils.py `cls_acc` (top-1 accuracy in percent)."
    pred = output.topk(topk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return 100 * float(correct[:topk].reshape(-1).float().sum()) / target.shape[0]

def ref_grid(search_scale, search_step):
    "Tip:utils.py#L99-129, the two list comprehensions at the top of `search_hp` (the endpoint is excluded)."
    beta_list = [i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in range(search_step[0])]
    alpha_list = [i * (search_scale[1] - 0.1) / search_step[1] + 0.1 for i in range(search_step[1])]
    return beta_list, alpha_list

def ref_search_hp(search_scale, search_step, cache_keys, cache_values, features, labels, clip_weights):
    "Tip:utils.py#L99-129 (`search_hp`, adapter=None branch); also returns every accuracy, beta-major."
    beta_list, alpha_list = ref_grid(search_scale, search_step)
    best_acc, best_beta, best_alpha, accs = 0, 0, 0, []
    for beta in beta_list:
        for alpha in alpha_list:
            acc = ref_cls_acc(ref_tip_logits(features, clip_weights, cache_keys, cache_values, beta, alpha), labels)
            accs.append(acc)
            if acc > best_acc: best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha, best_acc, beta_list, alpha_list, accs

def _setup(seed=0, n_cls=5, shots=4, d=32, n=40):
    g = torch.Generator().manual_seed(seed)
    # class centres; the text weights only weakly point at them, so that the cache term can change predictions
    # and the alpha/beta grid is not flat (checked in `test_tip_search_grid_is_not_flat`)
    centre = F.normalize(torch.randn(n_cls, d, generator=g, dtype=torch.float64), dim=-1)
    common = torch.randn(1, d, generator=g, dtype=torch.float64)
    text = F.normalize(common + 0.02 * centre + 0.02 * torch.randn(n_cls, d, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.arange(n_cls).repeat_interleave(shots)
    keys = F.normalize(centre[labels] + 0.3 * torch.randn(len(labels), d, generator=g, dtype=torch.float64), dim=-1)
    yv = torch.randint(0, n_cls, (n,), generator=g)
    feats = F.normalize(centre[yv] + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return text, keys, labels, feats, yv

@pytest.mark.parametrize('beta,alpha', [(1.0, 1.0), (5.5, 1.17), (0.3, 2.9)])
def test_tip_logits_match_authors(beta, alpha):
    text, keys, labels, feats, _ = _setup()
    ref = ref_tip_logits(feats, text.t(), keys.t(), F.one_hot(labels).double(), beta, alpha)
    ad = TipAdapter(text.float(), keys.float(), labels, alpha=alpha, beta=beta)
    ours = ad(feats.float()).double()
    assert ours.shape == ref.shape
    # logits are ~100 in size (the 100x zero-shot term); compare in float32 relative terms
    torch.testing.assert_close(ours, ref, rtol=TOL, atol=TOL * 100)
    # the cache term alone, which is O(1), must match to 1e-5 absolute
    ref_cache = ref - 100. * feats @ text.t()
    ours_cache = ad.alpha * (torch.exp(-ad.beta * (1 - ad.affinity(feats.float()))) @ ad.cache_values).double()
    torch.testing.assert_close(ours_cache, ref_cache, rtol=TOL, atol=TOL)

def test_tip_search_grid_matches_authors():
    for scale, steps in [((7., 3.), (200, 20)), ((12., 5.), (10, 7)), ((1., 1.3), (3, 1))]:
        betas, alphas = ref_grid(scale, steps)
        b, a = search_grid(scale, steps)
        torch.testing.assert_close(b, torch.tensor(betas, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(a, torch.tensor(alphas, dtype=torch.float64), rtol=0, atol=1e-12)

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tip_search_matches_authors(seed):
    text, keys, labels, feats, yv = _setup(seed)
    scale, steps = (7., 3.), (25, 10)
    bb, ba, bacc, betas, alphas, accs = ref_search_hp(scale, steps, keys.t(), F.one_hot(labels).double(), feats, yv, text.t())
    ad = TipAdapter(text.float(), keys.float(), labels)
    res = search(ad, feats.float(), yv, scale=scale, steps=steps)
    # every grid cell's accuracy, then the chosen pair (first strict maximum in the authors' loop order)
    torch.testing.assert_close(res['grid'].double().flatten(), torch.tensor(accs, dtype=torch.float64), rtol=0, atol=TOL)
    assert res['accuracy'] == pytest.approx(bacc, abs=TOL)
    assert res['beta'] == pytest.approx(bb, abs=TOL) and res['alpha'] == pytest.approx(ba, abs=TOL)

def test_tip_search_grid_is_not_flat():
    "Guard on the fixture: the search comparison above only means something if accuracy varies over the grid."
    for seed in range(3):
        text, keys, labels, feats, yv = _setup(seed)
        *_, accs = ref_search_hp((7., 3.), (25, 10), keys.t(), F.one_hot(labels).double(), feats, yv, text.t())
        assert max(accs) - min(accs) >= 5
