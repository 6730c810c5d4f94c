"LP-FT's head joins the model for the fit, so a checkpoint keeps the trained head and a resumed run ends where an uninterrupted one does."
import pytest
from clip_strategies.callback import Callback
from clip_strategies.cli import run, resolve_config
from clip_strategies.config import load_config
from clip_strategies.linear_probe import LPFT

class StopAfterFirstEpoch(Callback):
    run_after = ('checkpoint',)  # after the checkpoint of the epoch is written
    def after_epoch(self, learn):
        if learn.epoch == 0: raise KeyboardInterrupt

def test_lp_ft_resumes_with_its_trained_head(tmp_path, monkeypatch):
    over = {'TRAINER.NAME': 'lp_ft', 'OPTIM.MAX_EPOCH': 3, 'DATASET.NUM_SHOTS': 4, 'TRAIN.PRINT_FREQ': 0}
    quiet = dict(progress=False, log=lambda *a: None)
    whole = run(load_config(resolve_config('mini'), {**over, 'OUTPUT_DIR': str(tmp_path/'whole')}), **quiet)
    cut = load_config(resolve_config('mini'), {**over, 'OUTPUT_DIR': str(tmp_path/'cut')})
    first = LPFT.callbacks
    monkeypatch.setattr(LPFT, 'callbacks', lambda self: first(self) + [StopAfterFirstEpoch()])
    with pytest.raises(KeyboardInterrupt): run(cut, **quiet)
    monkeypatch.undo()
    assert not (tmp_path/'cut'/'metrics.json').exists() and list((tmp_path/'cut'/'checkpoints').glob('model-e0000*'))
    resumed = run(cut, resume=True, **quiet)
    assert resumed['accuracy'] == pytest.approx(whole['accuracy'], abs=1e-4)
    assert resumed['accuracy'] != resumed['before']['accuracy']
