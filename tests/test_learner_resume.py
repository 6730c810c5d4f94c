"""Exact resume across processes: a run interrupted after epoch 0 and resumed in a *new* process ends with the same
weights, bit for bit, as a run that was never interrupted.

Every source of randomness a resume must restore is in play: the data order (the loader's generator), and torch's,
Python's and NumPy's global RNGs (the dataset draws noise from all three on every item).
"""
import json, subprocess, sys, textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import sys, random, numpy as np, torch
    from safetensors.torch import save_file
    from open_clip.model import CLIP, CLIPVisionCfg, CLIPTextCfg
    from clip_strategies.callback import Callback, CancelFitException
    from clip_strategies.learner import Learner, dataloaders
    from clip_strategies.objectives import TextHeadClassification
    from clip_strategies.optim import LRScheduleCB
    from clip_strategies.callbacks import standard_cbs
    from clip_strategies.checkpoint import CheckpointCB
    torch.set_num_threads(1)
    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]

    class Noisy(torch.utils.data.Dataset):
        "Labelled images whose items draw noise from torch's, Python's and NumPy's global RNGs."
        classnames, templates = ['red', 'green', 'blue'], ['a photo of a {}.']
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.labels = torch.randn(24, 3, 32, 32, generator=g), torch.randint(0, 3, (24,), generator=g).tolist()
        def __len__(self): return len(self.labels)
        def __getitem__(self, i):
            noise = 0.1 * torch.randn(3, 32, 32) + random.random() + float(np.random.rand())
            return self.x[i] + noise, self.labels[i]

    def tokenizer(texts):
        out = torch.zeros(len(texts), 16, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [1] + [2 + sum(map(ord, w)) % 90 for w in t.split()] + [99]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    class Interrupt(Callback):
        run_after = ('checkpoint',)  # after the checkpoint of epoch 0 is written
        def after_epoch(self, learn):
            if learn.epoch == 0: raise CancelFitException

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32, head_width=32),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=64, heads=2, layers=2))
    torch.manual_seed(123 if mode == 'resume' else 7)  # a resumed process starts from other global RNG states
    random.seed(5); np.random.seed(5)
    dls = dataloaders(Noisy(), batch_size=8, seed=1)
    cbs = standard_cbs(schedule=LRScheduleCB(warmup_epochs=1), progress=False) + [CheckpointCB(ckpt, resume=(mode == 'resume'))]
    learn = Learner(model, dls, TextHeadClassification(tokenizer, Noisy.classnames), lr=1e-3, epochs=3, cbs=cbs)
    learn.fit(cbs=[Interrupt()] if mode == 'interrupt' else None)
    save_file({k: v.contiguous() for k, v in learn.model.state_dict().items()}, out)
''')


def _run(tmp, mode, ckpt):
    out = tmp/f'{mode}.safetensors'
    r = subprocess.run([sys.executable, '-c', SCRIPT, mode, str(ckpt), str(out)], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_resume_in_a_new_process_gives_identical_weights(tmp_path):
    from safetensors.torch import load_file
    import torch
    straight = load_file(_run(tmp_path, 'straight', tmp_path/'a'))
    _run(tmp_path, 'interrupt', tmp_path/'b')
    assert json.loads((tmp_path/'b'/'last.json').read_text())['epoch'] == 0
    resumed = load_file(_run(tmp_path, 'resume', tmp_path/'b'))
    assert json.loads((tmp_path/'b'/'last.json').read_text())['epoch'] == 2
    assert straight.keys() == resumed.keys()
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert differ == [], f'tensors differ after resume: {differ[:5]}'
