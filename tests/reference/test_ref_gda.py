"""Fidelity: GDA's estimator, augmented statistics and α search, transcribed from the authors' code, vs
`clip_strategies.linear_probe` (gda_head, augmented_features, blend_search, the `gda` strategy).

Authors' code: mrflogs/ICLR24 @ 560fe211 (alias `GDA` in /work/shared/RECIPES.md §0, the commit read for this test).
RECIPES.md §1.7:
  * feature collection: GDA:main_few_shots.py#L45-53: `for i in range(cfg["augment_epoch"])`, every batch of the
    augmenting loader encoded, normalised and appended (every augmented feature kept, none averaged).
  * estimator: GDA:main_few_shots.py#L56-64: class means; `center_vecs` the class-centred features;
    `cov_inv = D * pinv((N - 1) * center_vecs.T.cov() + center_vecs.T.cov().trace() * I)`; `W = mus @ cov_inv`
    (as `[D, C]`), `b = log(1/C) - ½ μᵀ cov_inv μ`.
  * α search: GDA:main_few_shots.py#L68-76: α in [1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100], logits
    `100 * val_features @ clip_weights + α * (val_features @ W + b)`, keep α only when `acc > best_val_acc` (strict: the
    first α of the grid with the best accuracy); `cls_acc` from GDA:utils.py#L10-15.
The authors' augmentation is torchvision's RandomResizedCrop(224, scale 0.5–1, bicubic) + flip on the PIL image
(GDA:main_few_shots.py#L24-29); the library crops the preprocessed tensor (`data.augment_images`, scale 0.5–1, flip),
so the test feeds both the same augmented tensors (the data pipeline is an input here, the math is what is compared).
The authors run in fp32 on the GPU; the transcription runs in float64, so the test compares the math, not the rounding.
Deviation by design (not a failure): the authors' ImageNet script picks α on the test set; the library only on val.
"""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from clip_strategies.data import augment_images, few_shot_splits
from clip_strategies.linear_probe import GDA, augmented_features, blend_search, gda_head
from clip_strategies.models import load_clip
from clip_strategies.tables import GDA_ALPHAS
from clip_strategies.zeroshot import class_text_features, split_features

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=1e-5)
AUTHORS_ALPHAS = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]  # GDA:main_few_shots.py#L70


# ---- transcription of the authors' code -------------------------------------------------------------------------------
def authors_cls_acc(output, target, topk=1):
    "GDA:utils.py#L10-15."
    pred = output.topk(topk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    acc = float(correct[: topk].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0])  # [0]: NumPy 2 refuses float() of a 1-d array
    return 100 * acc / target.shape[0]

def authors_collect(encode_image, loader_passes):
    "GDA:main_few_shots.py#L42-53 (`.cuda()` dropped); `loader_passes` yields one loader per augment epoch."
    vecs, labels = [], []
    for train_loader_cache in loader_passes:
        for image, target in train_loader_cache:
            image_features = encode_image(image)
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            vecs.append(image_features)
            labels.append(target)
    return torch.cat(vecs), torch.cat(labels)

def authors_estimate(vecs, labels, n_classes):
    "GDA:main_few_shots.py#L56-64 (`clip_weights.shape[1]` = the number of classes; `.cuda()` dropped)."
    mus = torch.cat([vecs[labels == i].mean(dim=0, keepdim=True) for i in range(n_classes)])
    center_vecs = torch.cat([vecs[labels == i] - mus[i].unsqueeze(0) for i in range(n_classes)])
    cov_inv = center_vecs.shape[1] * torch.linalg.pinv((center_vecs.shape[0] - 1) * center_vecs.T.cov()
                                                        + center_vecs.T.cov().trace() * torch.eye(center_vecs.shape[1], dtype=vecs.dtype))
    ps = torch.ones(n_classes, dtype=vecs.dtype) * 1. / n_classes
    W = torch.einsum('nd, dc -> cn', mus, cov_inv)
    b = ps.log() - torch.einsum('nd, dc, nc -> n', mus, cov_inv, mus) / 2
    return W, b  # W as [D, C]

def authors_alpha(val_features, val_labels, clip_weights, W, b, scale=100.):
    "GDA:main_few_shots.py#L68-76 (`100.` is CLIP's logit scale; `scale` lets a model with another one be compared)."
    best_val_acc = 0
    best_alpha = 0.1
    for alpha in AUTHORS_ALPHAS:
        val_logits = scale * val_features @ clip_weights + alpha * (val_features @ W + b)
        acc = authors_cls_acc(val_logits, val_labels)
        if acc > best_val_acc:
            best_val_acc = acc
            best_alpha = alpha
    return best_alpha


# ---- the tests --------------------------------------------------------------------------------------------------------
def features(n_per_class, n_classes, dim, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = mu[y] + 0.7 * torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True), y

@pytest.mark.parametrize('n_per_class,n_classes,dim', [(16, 4, 8), (10, 5, 32), (3, 6, 64), (160, 10, 64)])
def test_estimator_matches_the_authors(n_per_class, n_classes, dim):
    "Few vectors (N < D: the shrinkage makes the inverse exist) and many."
    x, y = features(n_per_class, n_classes, dim, seed=dim + n_per_class)
    W_ref, b_ref = authors_estimate(x, y, n_classes)
    W, b = gda_head(x, y, n_classes)
    scale = W_ref.abs().max().item()
    torch.testing.assert_close(W.double(), W_ref.T, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(b.double(), b_ref, atol=1e-5 * max(1., b_ref.abs().max().item()), rtol=1e-5)

def test_one_plain_shot_has_no_gda_term_in_both():
    "One vector a class: the centred features are zero, so the authors' W is zero too (GDA = zero-shot); hence the passes."
    x, y = features(1, 5, 16, seed=3)
    W_ref, b_ref = authors_estimate(x, y, 5)
    W, b = gda_head(x, y, 5)
    assert W_ref.abs().max().item() == 0 and W.abs().max().item() == 0
    torch.testing.assert_close(b.double(), b_ref, **TOL)

def test_alpha_grid_and_choice_match_the_authors():
    assert [float(a) for a in GDA_ALPHAS] == AUTHORS_ALPHAS
    chosen = set()
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        xv, yv = torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)
        Wt = torch.randn(6, 3, generator=g) * 0.01  # weak zero-shot weights [D, C]
        Wg, bg = torch.randn(6, 3, generator=g), torch.randn(3, generator=g) * 0.1
        ref = authors_alpha(xv, yv, Wt, Wg, bg)
        a, W, b = blend_search(100. * Wt.T, torch.zeros(3), Wg.T, bg, xv, yv)
        assert a == ref, (seed, a, ref)
        torch.testing.assert_close(xv @ W.T + b, 100. * xv @ Wt + ref * (xv @ Wg + bg), **TOL)
        chosen.add(a)
    assert len(chosen) > 1  # the comparison is not vacuous: different problems choose different α

def test_ties_keep_the_first_alpha_as_the_authors():
    "A GDA term that never changes a prediction: every α ties, the authors keep the first (1e-4)."
    xv, yv = torch.eye(3), torch.arange(3)
    assert authors_alpha(xv, yv, torch.eye(3), torch.zeros(3, 3), torch.zeros(3)) == 1e-4
    assert blend_search(100. * torch.eye(3), torch.zeros(3), torch.zeros(3, 3), torch.zeros(3), xv, yv)[0] == 1e-4

def test_gda_strategy_matches_the_authors_end_to_end():
    "The `gda` strategy on 2 shots of the mini lab: 10 augmented passes, estimator, α on val, the final head."
    model, prep, tok = load_clip('mini')
    with torch.no_grad(): model.logit_scale.fill_(math.log(100.))  # the authors' fixed 100
    splits = few_shot_splits('mini_shift', None, 2, 1, prep, prep)
    s = GDA()
    s.apply(model)
    head = s.fit(model, tok, {'train': splits['train'], 'val': splits['val']})
    # the authors' pipeline on the same augmented tensors (seed 0, batch 256, scale 0.5–1), in float64
    gen, loader = torch.Generator().manual_seed(0), DataLoader(splits['train'], batch_size=256)
    passes = ([(augment_images(x, (0.5, 1.0), gen), y) for x, y in loader] for _ in range(10))
    with torch.no_grad():
        vecs, labels = authors_collect(lambda im: model.encode_image(im).double(), passes)
        val_features, val_labels = split_features(model, splits['val'])
        clip_weights = class_text_features(model, tok, splits['train'].classnames, splits['train'].templates).double().T
    assert len(vecs) == 10 * len(splits['train'])
    n_classes = clip_weights.shape[1]
    W_ref, b_ref = authors_estimate(vecs, labels, n_classes)
    alpha = authors_alpha(val_features.double(), val_labels, clip_weights, W_ref, b_ref)
    assert head['alpha'] == alpha
    final_W, final_b = 100. * clip_weights.T + alpha * W_ref.T, alpha * b_ref
    scale = final_W.abs().max().item()
    torch.testing.assert_close(head['weight'].double(), final_W, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(head['bias'].double(), final_b, atol=1e-5 * max(1., final_b.abs().max().item()), rtol=1e-5)
    # and the library's own collection is the authors' loop: every feature of every pass, in pass order
    x_lib, y_lib = augmented_features(model, splits['train'])
    torch.testing.assert_close(x_lib.double(), vecs, **TOL)
    assert torch.equal(y_lib, labels)
