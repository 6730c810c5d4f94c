"Issue 21: a learned-part file carries the BatchNorm statistics training moved (RN50's image tower), so it rebuilds the model."
import torch
from torch import nn
from clip_strategies.models import load_clip
from clip_strategies.strategy import get_strategy, save_learned, load_learned, running_stats

def with_norm(model):
    "The mini CLIP with a BatchNorm layer in its image tower, as a ResNet has."
    model.visual.norm_stats = nn.BatchNorm1d(3)
    return model

def test_learned_part_keeps_the_running_statistics(tmp_path):
    model = with_norm(load_clip('mini', device='cpu')[0]); st = get_strategy('coop'); st.apply(model)
    assert running_stats(model) == ['visual.norm_stats.running_mean', 'visual.norm_stats.running_var', 'visual.norm_stats.num_batches_tracked']
    model.visual.norm_stats.train(); model.visual.norm_stats(torch.randn(8, 3) * 5 + 2)  # a train-mode pass moves them
    path = save_learned(st, model, tmp_path/'learned.safetensors', 'mini')
    fresh = with_norm(load_clip('mini', device='cpu')[0]); load_learned(fresh, path, 'mini')
    for n in running_stats(model): torch.testing.assert_close(fresh.state_dict()[n], model.state_dict()[n])

def test_a_model_without_batchnorm_saves_only_what_the_strategy_added(tmp_path):
    model = load_clip('mini', device='cpu')[0]; st = get_strategy('coop'); st.apply(model)
    assert running_stats(model) == []
    load_learned(load_clip('mini', device='cpu')[0], save_learned(st, model, tmp_path/'l.safetensors', 'mini'), 'mini')
