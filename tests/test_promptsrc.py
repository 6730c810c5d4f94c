"""PromptSRC through the command line: a bare config trains with the mini-lab recipe and beats zero-shot on mini_shift, its
learned part (GPA's aggregate) reloads to the same logits, GPA's weights checked by hand, a ResNet and bad options refused."""
import copy, math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, DataLoader
from safetensors.torch import load_file

from clip_strategies.cli import train_main
from clip_strategies.config import load_config
from clip_strategies.core import read_safetensors
from clip_strategies.callback import Callback
from clip_strategies.learner import Learner, DataLoaders
from clip_strategies.objectives import HeadClassification
from conftest import bare_run
from clip_strategies.models import load_clip, random_clip
from clip_strategies.strategy import StrategyError, get_strategy, load_learned, list_strategies

pytestmark = pytest.mark.usefixtures('one_thread')  # one torch thread for this module's tests (conftest), restored after

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "PromptSRC from a bare config (no OPTIM key, no TRAINER.PROMPTSRC key): the mini-lab recipe sets them."
    return bare_run(tmp_path_factory, 'promptsrc')

def test_registered():
    assert 'promptsrc' in list_strategies()

def test_trains_from_a_bare_config_and_beats_zero_shot_on_mini_shift(run):
    out, m = run
    assert m['strategy'] == 'promptsrc' and m['dataset'] == 'mini_shift' and m['num_shots'] == 16
    assert m['accuracy'] > m['before']['accuracy'] + 5, (m['accuracy'], m['before']['accuracy'])  # zero-shot: 27.4%
    assert m['trainable_params'] == 2 * 4 * 128 + 3 * 4 * 128  # 4 tokens in the 2 text and 3 image blocks of the mini CLIP

def test_saves_only_its_prompts_and_reloads_to_the_same_logits(run):
    out, _ = run
    tensors, _ = read_safetensors(out/'learned.safetensors')
    assert sorted(tensors) == ['transformer.promptsrc.prompts', 'visual.transformer.promptsrc.prompts']
    fresh = load_clip('mini', device='cpu')[0]
    strategy = load_learned(fresh, out/'learned.safetensors', 'mini')
    trained = get_strategy(strategy.name, **strategy.get_options()).apply(load_clip('mini', device='cpu')[0])
    trained.load_state_dict(load_file(str(out/'model.safetensors')))  # the whole model as the run left it (GPA's aggregate)
    g = torch.Generator().manual_seed(0)
    imgs, texts = torch.randn(3, 3, 32, 32, generator=g), fresh.tokenizer(['X X X X circle.', 'X X X X star.', 'a red circle'])
    with torch.no_grad():
        a, b = fresh.eval()(imgs, texts), trained.eval()(imgs, texts)
    for x, y in zip(a[:2], b[:2]): torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    untrained = get_strategy(strategy.name, **strategy.get_options()).apply(load_clip('mini', device='cpu')[0])
    assert not torch.allclose(untrained.transformer.promptsrc.prompts, fresh.transformer.promptsrc.prompts, atol=1e-4)  # it trained

def test_yaml_keys_in_the_original_tools_style_reach_the_options():
    cfg = load_config(None, {'TRAINER.NAME': 'promptsrc', 'TRAINER.PROMPTSRC.N_CTX_VISION': 2, 'TRAINER.PROMPTSRC.GPA_MEAN': 5,
                             'TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT': 3})
    s = cfg.build_strategy()
    assert (s.n_ctx_vision, s.gpa_mean, s.text_loss_weight, s.prompt_depth_text) == (2, 5., 3., 2)  # depth 2: the mini recipe's

class Record(Callback):
    "The weight after each epoch's training, before GPA touches it."
    run_before = ('gpa',)
    def __init__(self): self.seen = []
    def after_train(self, learn): self.seen.append(learn.model.weight.detach().clone())

def test_gpa_callback_averages_the_epochs_with_gaussian_weights_by_hand():
    from clip_strategies.promptsrc import GPACB
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    model = nn.Linear(3, 2, bias=False)
    rec = Record()
    learn = Learner(model, DataLoaders(dl, dl), HeadClassification(), lr=0.5, epochs=3, cbs=[GPACB(2., 1.), rec])
    learn.opt_func = lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr)
    learn.fit()
    a = math.exp(-0.5)  # the Gaussian N(2, 1) at epochs 1 and 3, relative to epoch 2; its 1/(σ√2π) cancels
    w = [a / (1 + 2 * a), 1 / (1 + 2 * a), a / (1 + 2 * a)]  # 0.2741, 0.4519, 0.2741
    assert [round(v, 4) for v in w] == [0.2741, 0.4519, 0.2741]
    assert len(rec.seen) == 3 and not torch.allclose(rec.seen[0], rec.seen[2])
    torch.testing.assert_close(model.weight.detach(), sum(wi * p for wi, p in zip(w, rec.seen)), rtol=0, atol=1e-6)

def test_a_resnet_is_refused_naming_its_image_tower():
    with pytest.raises(StrategyError, match='ModifiedResNet.*ViT backbone'):
        get_strategy('promptsrc').check_model(random_clip('RN50'))

@pytest.mark.parametrize('key,value,name', [('TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT', '0', 'prompt_depth_text'),
                                            ('TRAINER.PROMPTSRC.GPA_STD', '-1', 'gpa_std'),
                                            ('TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION', '7', 'prompt_depth_vision')])
def test_a_bad_option_is_an_error_naming_it(tmp_path, capsys, key, value, name):
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'promptsrc', key, value, 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and name in err, err

def test_gpa_sum_survives_a_resume(tmp_path):
    "A run cancelled after its second epoch and resumed from its checkpoint ends with the same aggregate as a straight run."
    from clip_strategies.promptsrc import GPACB
    from clip_strategies.checkpoint import CheckpointCB
    from clip_strategies.callback import CancelFitException
    class Stop(Callback):
        run_after = ('gpa',)
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException
    def fit(path, resume=False, stop=False):
        torch.manual_seed(0)
        x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        model = nn.Linear(3, 2, bias=False)
        dl = DataLoader(TensorDataset(x, y), batch_size=4)
        cbs = [GPACB(2., 1.), CheckpointCB(path, resume=resume)] + ([Stop()] if stop else [])
        learn = Learner(model, DataLoaders(dl, None), HeadClassification(), lr=0.5, epochs=4, cbs=cbs)
        learn.opt_func = lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr)
        learn.fit()
        return model.weight.detach()
    straight = fit(tmp_path/'a')
    fit(tmp_path/'b', stop=True)
    torch.testing.assert_close(fit(tmp_path/'b', resume=True), straight, rtol=0, atol=1e-7)
