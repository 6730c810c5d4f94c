"""MaPLe through the command line: trains from a bare config and beats zero-shot on mini_shift, its learned part reloads
with the same logits, a ResNet and bad options are refused before any data is read."""
import json
import pytest
import torch
import open_clip
from clip_strategies.cli import train_main
from clip_strategies.config import load_config
from conftest import bare_run
from clip_strategies.models import load_clip, with_tokenizer
from clip_strategies.strategy import get_strategy, load_learned, StrategyError, OptionError

pytestmark = pytest.mark.usefixtures('one_thread')  # one torch thread for this module's tests (conftest), restored after

@pytest.fixture(scope='module')
def maple_run(tmp_path_factory):
    "MaPLe from a bare mini config: its mini-lab recipe (SGD, 20 epochs, depth 2) on 16 shots of mini_shift."
    return bare_run(tmp_path_factory, 'maple')[0]

def test_maple_beats_zero_shot_on_mini_shift(maple_run):
    m = json.loads((maple_run/'metrics.json').read_text())
    assert m['strategy'] == 'maple' and m['dataset'] == 'mini_shift'
    assert m['accuracy'] > m['before']['accuracy'] + 5, (m['accuracy'], m['before']['accuracy'])  # 27.4% -> about 40%
    assert m['trainable_params'] == 2 * 128 + 1 * 2 * 128 + 2 * (128 * 128 + 128)  # ctx, 1 deeper text prompt, 2 maps

def test_learned_part_reloads_with_the_same_logits(maple_run):
    from safetensors.torch import load_file
    trained, _, tok = load_clip('mini', device='cpu')
    s = get_strategy({'name': 'maple', 'prompt_depth': 2}); s.apply(trained)
    trained.load_state_dict(load_file(str(maple_run/'model.safetensors')))
    fresh = load_clip('mini', device='cpu')[0]
    loaded = load_learned(fresh, maple_run/'learned.safetensors', 'mini')
    assert sorted(loaded.learned_names(fresh)) == sorted(n for n in fresh.state_dict() if n.startswith('maple.'))
    imgs, toks = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), tok([s.template().format(c) for c in ('circle', 'star')])
    def logits(m):
        m.eval()
        with torch.no_grad(): i, t, scale = m(imgs, toks)[:3]
        return scale * i @ t.T
    torch.testing.assert_close(logits(fresh), logits(trained), rtol=0, atol=1e-5)
    assert not torch.allclose(fresh.maple.ctx, get_strategy('maple', prompt_depth=2).apply(load_clip('mini', device='cpu')[0]).maple.ctx)  # it trained

def test_yaml_keys_of_the_original_tool_reach_the_options():
    cfg = load_config(None, {'TRAINER.NAME': 'maple', 'TRAINER.MAPLE.N_CTX': 3, 'TRAINER.MAPLE.PROMPT_DEPTH': 1, 'TRAINER.MAPLE.CTX_INIT': 'a good photo'})
    s = cfg.build_strategy()
    assert (s.n_ctx, s.prompt_depth, s.ctx_init) == (3, 1, 'a good photo')

def test_resnet_is_refused_before_any_data(tmp_path, capsys):
    rn = open_clip.CLIP(embed_dim=32, vision_cfg=dict(layers=(1, 1, 1, 1), width=16, image_size=32, head_width=16),
                        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
    with pytest.raises(StrategyError, match='ModifiedResNet'): get_strategy('maple', prompt_depth=1).check_model(rn)
    with pytest.raises(StrategyError, match='ModifiedResNet'): get_strategy('maple', prompt_depth=1).apply(with_tokenizer(rn, open_clip.get_tokenizer('ViT-B-32')))

@pytest.mark.parametrize('args,says', [(['TRAINER.MAPLE.N_CTX', '0'], "option n_ctx of strategy 'maple' must be an integer >= 1"),
                                       (['TRAINER.MAPLE.PROMPT_DEPTH', '9'], 'at most 2, the layers of the shallower tower'),
                                       (['TRAINER.MAPLE.N_CTX', '6'], 'at least n_ctx=6 tokens')])
def test_bad_options_are_refused_naming_them(tmp_path, capsys, args, says):
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'maple', *args, 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and says in err, err

def test_patch_dropout_is_turned_off_and_said():
    from open_clip.transformer import PatchDropout
    import warnings
    model = load_clip('mini', device='cpu')[0]
    model.visual.patch_dropout = PatchDropout(0.5)
    with pytest.warns(UserWarning, match=r"turns off the vision tower's patch dropout \(prob 0.5\)"):
        get_strategy('maple', prompt_depth=1).apply(model)
    assert isinstance(model.visual.patch_dropout, torch.nn.Identity)
    with warnings.catch_warnings():  # none to turn off (open_clip's default): nothing said
        warnings.simplefilter('error')
        get_strategy('maple', prompt_depth=1).apply(load_clip('mini', device='cpu')[0])
