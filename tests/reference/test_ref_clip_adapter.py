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
