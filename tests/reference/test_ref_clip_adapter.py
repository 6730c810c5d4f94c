"""Fidelity: CLIP-Adapter's residual feature adapter, transcribed from the authors' code, vs `clip_strategies.adapter`.

Authors' code: gaopengcuhk/CLIP-Adapter @ 08d07f8e (alias `CLIPA` in /work/shared/RECIPES.md §0; the copy read for
this test is commit 9ac913a9, same code). RECIPES.md §1.4:
  * adapter: CLIPA:clip_adapter.py#L55-67 (class `Adapter`: Linear(c_in, c_in//reduction, bias=False), ReLU,
    Linear(c_in//reduction, c_in, bias=False), ReLU), built as `Adapter(1024, 4)` at #L97;
  * residual: CLIPA:clip_adapter.py#L104-105 (`ratio = 0.2`; `image_features = ratio * x + (1 - ratio) * image_features`).
The transcription below exists for the test only; the library's weights are copied INTO it.
"""
import pytest, torch
from torch import nn
from clip_strategies.adapter import FeatureAdapter, CLIPAdapter

TOL = 1e-5

class RefAdapter(nn.Module):
    "CLIPA:clip_adapter.py#L55-67."
    def __init__(self, c_in, reduction=4):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c_in, c_in // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c_in // reduction, c_in, bias=False), nn.ReLU(inplace=True))
    def forward(self, x): return self.fc(x)

def ref_adapted(adapter, image_features, ratio=0.2):
    "CLIPA:clip_adapter.py#L103-105 (the residual blend in `CustomCLIP.forward`, before normalisation)."
    x = adapter(image_features)
    return ratio * x + (1 - ratio) * image_features

def _copy_weights(lib:FeatureAdapter, ref:RefAdapter):
    lins = [m for m in lib.modules() if isinstance(m, nn.Linear)]
    rlins = [m for m in ref.modules() if isinstance(m, nn.Linear)]
    assert len(lins) == len(rlins) == 2
    with torch.no_grad():
        for a, b in zip(lins, rlins):
            assert a.weight.shape == b.weight.shape and a.bias is None and b.bias is None
            b.weight.copy_(a.weight)

@pytest.mark.parametrize('dim,reduction,ratio', [(1024, 4, 0.2), (512, 4, 0.2), (64, 8, 0.6), (48, 4, 0.0), (48, 4, 1.0)])
def test_feature_adapter_matches_authors(dim, reduction, ratio):
    torch.manual_seed(dim + reduction)
    lib = FeatureAdapter(dim, reduction, ratio)
    ref = RefAdapter(dim, reduction)
    _copy_weights(lib, ref)
    x = torch.randn(16, dim)
    torch.testing.assert_close(lib(x.clone()), ref_adapted(ref, x.clone(), ratio), rtol=TOL, atol=TOL)

def test_defaults_are_the_authors():
    "Reduction 4 and ratio 0.2 (CLIPA:clip_adapter.py#L56 `reduction=4`, #L104 `ratio = 0.2`)."
    lib = FeatureAdapter(1024)
    assert lib.ratio == 0.2
    shapes = [tuple(m.weight.shape) for m in lib.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(256, 1024), (1024, 256)]
    s = CLIPAdapter()
    assert s.ratio == 0.2 and s.reduction == 4 and s.side == 'image'

def ref_custom_clip_logits(encode_image, text_features, adapter, logit_scale, images, ratio=0.2):
    "CLIPA:clip_adapter.py#L100-115 (`CustomCLIP.forward`): adapter on the image features, blend, normalise both, scale · cosine."
    image_features = encode_image(images)
    x = adapter(image_features)
    image_features = ratio * x + (1 - ratio) * image_features
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return logit_scale.exp() * image_features @ text_features.t()

def test_clip_adapter_strategy_on_a_tiny_open_clip_gives_the_authors_logits():
    "The strategy's adapter sits where theirs does: on the image tower's output, before normalisation; CLIP frozen."
    import copy
    from clip_strategies.strategy import get_strategy
    from tiny_backbones import tiny_clip
    torch.manual_seed(0)
    base = tiny_clip()
    model = copy.deepcopy(base)
    strat = get_strategy('clip_adapter')
    strat.apply(model)
    assert sorted(strat.learned_names(model)) == ['visual.clip_adapter.fc.0.weight', 'visual.clip_adapter.fc.2.weight']
    ref = RefAdapter(32, 4)
    _copy_weights(model.visual.clip_adapter, ref)
    images, tokens = torch.randn(3, 3, 32, 32), base.tokenizer(['a photo of a cat.', 'a photo of a dog.', 'a photo of a car.'])
    model.eval()
    with torch.no_grad():
        got = model.logit_scale.exp() * model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).t()
        want = ref_custom_clip_logits(base.encode_image, base.encode_text(tokens), ref, base.logit_scale, images)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
