"""Fidelity: the linear probe's C search as CoOp's `lpclip` runs it, transcribed from the authors' code, vs
`clip_strategies.linear_probe.lpclip_search` (the `search='lpclip'` option of `linear_probe`, its real-CLIP recipe).

Authors' code: KaiyangZhou/CoOp `lpclip/linear_probe.py` @ 61a9cd3c (the commit stored by the search tool; lpclip is not
in /work/shared/RECIPES.md, REFERENCE.md 'Linear probe' describes it):
  * coarse grid: #L52-61: `search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]`, one
    `LogisticRegression(solver="lbfgs", max_iter=1000, penalty="l2", C=c_weight)` fit each, validation accuracy.
  * bisection: #L65-67 `peak_idx = np.argmax(acc_list)` (the first maximum), `c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak`;
    #L69-104 `binary_search`: fit both ends; `if acc_left < acc_right` the right end wins and the range becomes
    [mid, right] in log10, else (ties too) the left end wins and it becomes [left, mid]; #L106-113: `num_step` (8) rounds.
  * the reported model is the winner of the LAST round (`clf_final` of the last step; #L114-115 keep `[:, -1]`).
The transcription below follows those lines without the file I/O, printing and reporting; nothing is imported from the
library into it.
"""
import numpy as np
import pytest
import torch
import warnings

from clip_strategies.linear_probe import LinearProbe, lpclip_search

SEARCH_LIST = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]

@pytest.fixture(autouse=True)
def one_blas_thread():
    "Tiny fits: BLAS threads on a shared machine only slow them down (30 s against 5 s here)."
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1): yield


# ---- transcription of the authors' code -------------------------------------------------------------------------------
def authors_lpclip(train_feature, train_label, val_feature, val_label, test_feature, test_label, num_step=8):
    "CoOp:lpclip/linear_probe.py#L52-113 for one seed: returns (C of the last round, its test accuracy in percent)."
    from sklearn.linear_model import LogisticRegression
    acc_list = []
    for c_weight in SEARCH_LIST:
        clf = LogisticRegression(solver="lbfgs", max_iter=1000, penalty="l2", C=c_weight).fit(train_feature, train_label)
        pred = clf.predict(val_feature)
        acc_list.append(sum(pred == val_label) / len(val_label))
    peak_idx = np.argmax(acc_list)
    c_peak = SEARCH_LIST[peak_idx]
    c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak

    def binary_search(c_left, c_right):
        clf_left = LogisticRegression(solver="lbfgs", max_iter=1000, penalty="l2", C=c_left).fit(train_feature, train_label)
        acc_left = sum(clf_left.predict(val_feature) == val_label) / len(val_label)
        clf_right = LogisticRegression(solver="lbfgs", max_iter=1000, penalty="l2", C=c_right).fit(train_feature, train_label)
        acc_right = sum(clf_right.predict(val_feature) == val_label) / len(val_label)
        if acc_left < acc_right:
            c_final, clf_final = c_right, clf_right
            c_left = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_right = np.log10(c_right)
        else:
            c_final, clf_final = c_left, clf_left
            c_right = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_left = np.log10(c_left)
        test_acc = 100 * sum(clf_final.predict(test_feature) == test_label) / len(test_label)
        return np.power(10, c_left), np.power(10, c_right), c_final, test_acc

    c_final = test_acc = None
    for step in range(num_step):
        c_left, c_right, c_final, test_acc = binary_search(c_left, c_right)
    return c_final, test_acc


# ---- the tests --------------------------------------------------------------------------------------------------------
def fewshot(x, y, shots, val_shots, seed):
    "lpclip's sampling (#L31-50): `shots` train and `val_shots` val images per class, without replacement, disjoint here."
    rng = np.random.RandomState(seed)
    tr, va = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.where(y == c)[0])
        tr.extend(idx[:shots]); va.extend(idx[shots:shots + val_shots])
    rest = np.setdiff1d(np.arange(len(y)), tr + va)
    return np.array(tr), np.array(va), rest

def digits(shots, seed):
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = d.data / 16., d.target
    tr, va, te = fewshot(x, y, shots, {1: 1, 2: 2}.get(shots, 4), seed)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]

def blobs(shots, seed, n_classes=5, dim=12):
    g = np.random.RandomState(seed)
    mu = g.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), 40)
    x = mu[y] + 1.5 * g.randn(len(y), dim)
    tr, va, te = fewshot(x, y, shots, 4, seed)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]

def library(xtr, ytr, xva, yva, xte, yte, steps=8):
    t = lambda a: torch.as_tensor(a)
    C, W, b, tried = lpclip_search(t(xtr), t(ytr).long(), t(xva), t(yva).long(), steps=steps)
    acc = 100 * ((t(xte) @ W.double().T + b.double()).argmax(1).numpy() == yte).sum() / len(yte)
    return C, acc, tried

CASES = [('digits', 1, 1, 3), ('digits', 4, 2, 8), ('blobs', 2, 4, 3), ('blobs', 8, 5, 3)]  # (data, shots, seed, lpclip's num_step)

@pytest.mark.parametrize('data,shots,seed,steps', CASES)
def test_chosen_C_and_accuracy_match_lpclip(data, shots, seed, steps):
    split = (digits if data == 'digits' else blobs)(shots, seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scikit-learn's convergence/deprecation warnings, in the authors' loop too
        ref_C, ref_acc = authors_lpclip(*split, num_step=steps)
    C, acc, tried = library(*split, steps=steps)
    assert C == pytest.approx(ref_C, rel=1e-9)
    assert acc == pytest.approx(ref_acc, abs=1e-9)
    assert len(tried) == 7 + 2 * steps and C in (tried[-2][0], tried[-1][0])  # the last round's winner

def test_linear_probe_option_runs_the_lpclip_search():
    xtr, ytr, xva, yva, xte, yte = blobs(4, 7)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)
    head = LinearProbe(search='lpclip', steps=2).fit_head(None, None, (t(xtr), t(ytr).long()), (t(xva), t(yva).long()),
                                                 type('D', (), {'classnames': list('abcde')})())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref_C, _ = authors_lpclip(xtr, ytr, xva, yva, xte, yte, num_step=2)
    assert head['C'] == pytest.approx(ref_C, rel=1e-9) and head['tried'] == 7 + 2 * 2
