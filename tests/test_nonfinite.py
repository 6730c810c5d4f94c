"""NonFiniteCB checks the losses of an epoch that a step budget (`OPTIM.MAX_ITER`) ends early, not only of whole epochs."""
from types import SimpleNamespace
import pytest, torch
from clip_strategies.callbacks import NonFiniteCB, NonFiniteLossError

def test_a_nan_in_an_epoch_cut_short_is_caught():
    cb, learn = NonFiniteCB(every=8), SimpleNamespace(training=True, epoch=3, iter=0, ckpt_dir=None)
    cb.before_train(learn)
    for i, loss in enumerate([1.0, 0.9, float('nan')]):  # fewer than `every`: no check yet
        learn.iter, learn.loss = i, torch.tensor(loss); cb.after_batch(learn)
    with pytest.raises(NonFiniteLossError, match='epoch 3, batch 2'): cb.after_cancel_train(learn)
