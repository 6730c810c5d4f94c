"""Fidelity: WiSE-FT's weight-space mix and its zero-shot classifier, transcribed from the authors' code, vs `clip_strategies.protocols`.

Authors' code: mlfoundations/wise-ft @ 58b7a4b3 (alias `WiSE` in /work/shared/RECIPES.md §0). RECIPES.md §1.10:
  * the mix: WiSE:src/wise_ft.py#L15-40 (`_merge` without Fisher weights: `(1 - alpha) * theta_0[key] + alpha * theta_1[key]`
    for every key of the classifier's state dict);
  * the zero-shot head: WiSE:src/models/zeroshot.py#L35-58 (`get_zeroshot_classifier`: per class, normalise each template's
    embedding, average, re-normalise; stack, multiply by `logit_scale.exp()`), put in `ClassificationHead(normalize=True,
    weights=...)` with bias 0 (WiSE:src/models/modeling.py#L35-54: inputs L2-normalised, then the linear layer);
  * the classifier: `ImageClassifier(image_encoder, classification_head)` (WiSE:src/models/modeling.py#L62-80,
    WiSE:src/wise_ft.py#L46-53): the image encoder's `encode_image`, then the head.
The transcription below exists for the test only; the library is compared with it on a tiny open_clip model.
"""
import copy, functools, sys, types
from pathlib import Path
import pytest, torch
from torch import nn
sys.path.insert(0, str(Path(__file__).parent))
from tiny_backbones import tiny_clip
from clip_strategies.protocols import interpolate, zero_shot_linear_head, mixed_head_logits

TOL = 1e-5
CLASSNAMES = ['cat', 'dog', 'car', 'tree']
TEMPLATES = ['a photo of a {}.', 'a blurry photo of a {}.', 'itap of a {}.']

def ref_merge(alpha, theta_0, theta_1):
    "WiSE:src/wise_ft.py#L15-21 (`_merge`, fishers None)."
    return {key: (1 - alpha) * theta_0[key] + alpha * theta_1[key] for key in theta_0.keys()}

def ref_zeroshot_weights(clip_model, tokenize, classnames, template):
    "WiSE:src/models/zeroshot.py#L35-56 (`get_zeroshot_classifier`'s weights; `tokenize` in place of clip.tokenize)."
    logit_scale = clip_model.logit_scale
    clip_model.eval()
    with torch.no_grad():
        zeroshot_weights = []
        for classname in classnames:
            texts = []
            for t in template:
                texts.append(t(classname))
            texts = tokenize(texts)
            embeddings = clip_model.encode_text(texts)
            embeddings /= embeddings.norm(dim=-1, keepdim=True)
            embeddings = embeddings.mean(dim=0, keepdim=True)
            embeddings /= embeddings.norm()
            zeroshot_weights.append(embeddings)
        zeroshot_weights = torch.stack(zeroshot_weights, dim=0)
        zeroshot_weights = torch.transpose(zeroshot_weights, 0, 2)
        zeroshot_weights *= logit_scale.exp()
        zeroshot_weights = zeroshot_weights.squeeze().float()
        zeroshot_weights = torch.transpose(zeroshot_weights, 0, 1)
    return zeroshot_weights

class RefClassificationHead(torch.nn.Linear):
    "WiSE:src/models/modeling.py#L35-54."
    def __init__(self, normalize, weights, biases=None):
        output_size, input_size = weights.shape
        super().__init__(input_size, output_size)
        self.normalize = normalize
        if weights is not None: self.weight = torch.nn.Parameter(weights.clone())
        if biases is not None: self.bias = torch.nn.Parameter(biases.clone())
        else: self.bias = torch.nn.Parameter(torch.zeros_like(self.bias))
    def forward(self, inputs):
        if self.normalize: inputs = inputs / inputs.norm(dim=-1, keepdim=True)
        return super().forward(inputs)

class RefImageClassifier(nn.Module):
    "WiSE:src/models/modeling.py#L62-80 (`ImageClassifier.forward`, images processed): encode_image, then the head."
    def __init__(self, clip_model, head):
        super().__init__()
        self.image_encoder, self.classification_head = clip_model, head
    def forward(self, inputs): return self.classification_head(self.image_encoder.encode_image(inputs))

def _templates_as_functions(templates): return [lambda c, t=t: t.replace('{}', c) for t in templates]

@functools.lru_cache(maxsize=None)
def _ends(seed:int=0):
    "A zero-shot tiny CLIP and a 'fine-tuned' copy (every tensor moved, the temperature too); built once per seed, never changed."
    torch.manual_seed(seed)
    zs = tiny_clip()
    ft = copy.deepcopy(zs)
    with torch.no_grad():
        for p in ft.parameters(): p.add_(0.05 * torch.randn_like(p))
        ft.logit_scale.add_(0.3)
    return zs, ft

def _dataset(): return types.SimpleNamespace(classnames=CLASSNAMES, templates=TEMPLATES)

def test_zero_shot_head_matches_authors():
    zs, _ = _ends()
    W_ref = ref_zeroshot_weights(zs, zs.tokenizer, CLASSNAMES, _templates_as_functions(TEMPLATES))
    W, b = zero_shot_linear_head(zs, zs.tokenizer, _dataset())
    torch.testing.assert_close(W, W_ref, rtol=TOL, atol=TOL)
    assert torch.equal(b, torch.zeros(len(CLASSNAMES)))

@pytest.mark.parametrize('alpha', [0.0, 0.3, 0.5, 0.9, 1.0])
def test_mix_of_every_tensor_matches_authors(alpha):
    zs, ft = _ends(1)
    t0, t1 = zs.state_dict(), ft.state_dict()
    ours, ref = interpolate(t0, t1, alpha), ref_merge(alpha, t0, t1)
    assert set(ours) == set(ref)
    for k in ref: torch.testing.assert_close(ours[k], ref[k], rtol=TOL, atol=TOL, msg=k)

@pytest.mark.parametrize('alpha', [0.0, 0.25, 0.5, 0.8, 1.0])
def test_mixed_classifier_matches_authors(alpha):
    "The authors' classifiers (encoder + zero-shot head; encoder + a trained head with a bias) mixed by `_merge`, vs ours."
    zs, ft = _ends(2)
    tmpl = _templates_as_functions(TEMPLATES)
    torch.manual_seed(3)
    W1_trained = ref_zeroshot_weights(ft, ft.tokenizer, CLASSNAMES, tmpl) + 0.5 * torch.randn(len(CLASSNAMES), 32)
    b1_trained = torch.randn(len(CLASSNAMES))
    ref0 = RefImageClassifier(copy.deepcopy(zs), RefClassificationHead(True, ref_zeroshot_weights(zs, zs.tokenizer, CLASSNAMES, tmpl)))
    ref1 = RefImageClassifier(copy.deepcopy(ft), RefClassificationHead(True, W1_trained, b1_trained))
    ref = copy.deepcopy(ref1)
    ref.load_state_dict(ref_merge(alpha, ref0.state_dict(), ref1.state_dict()))
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad(): expected = ref.eval()(x)

    model = copy.deepcopy(zs)
    heads = (zero_shot_linear_head(zs, zs.tokenizer, _dataset()), (W1_trained, b1_trained))
    model.load_state_dict(interpolate(zs.state_dict(), ft.state_dict(), alpha))
    with torch.no_grad(): ours = mixed_head_logits(model.eval().encode_image(x, normalize=True), heads, alpha)
    torch.testing.assert_close(ours, expected, rtol=TOL, atol=TOL)
