"""Fidelity: CLIP's symmetric contrastive loss and the zero-shot prompt ensemble, transcribed from reference code.

Contrastive loss: mlfoundations/open_clip, src/open_clip/loss.py, class `ClipLoss` (read in the installed open_clip
3.3.0: `get_logits` #L104-124, single-process branch #L123-124 `logits_per_image = logit_scale * image_features @
text_features.T`, `logits_per_text = logit_scale * text_features @ image_features.T`; `forward` #L150-153
`total_loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2`, labels =
arange(N)). Same formula as the pseudo-code in the CLIP paper (openai/CLIP). RECIPES.md has no contrastive-loss row.
`clip_strategies.objectives.clip_loss` takes the already scaled `[B, B]` logits.

Prompt ensemble: gaopengcuhk/Tip-Adapter @ d0e2d6f8, utils.py `clip_classifier` (/work/shared/RECIPES.md §1.5
"Text classifier", Tip:utils.py#L18-35): per class, encode each template, L2-normalise each embedding, mean over
templates, L2-normalise again; stacked as `[D, C]` (dim=1). The library returns `[C, D]`.
The functions below are transcriptions for the test only.
"""
import pytest, torch
import torch.nn.functional as F
from torch import nn
from clip_strategies.objectives import clip_loss
from clip_strategies.zeroshot import class_text_features

TOL = 1e-5

def ref_clip_loss(image_features, text_features, logit_scale):
    "open_clip loss.py ClipLoss.get_logits #L123-124 + forward #L150-153 (world_size 1)."
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    labels = torch.arange(logits_per_image.shape[0], dtype=torch.long)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

@pytest.mark.parametrize('n,d,scale', [(8, 16, 100.), (33, 64, 14.3), (1, 8, 1.0), (64, 32, 1 / 0.07)])
def test_clip_loss_matches_open_clip(n, d, scale):
    g = torch.Generator().manual_seed(n * d)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    ours = clip_loss(scale * img @ txt.T)
    torch.testing.assert_close(ours, ref_clip_loss(img, txt, scale), rtol=TOL, atol=TOL)

def test_clip_loss_gradients_match_open_clip():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(12, 16, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(12, 16, generator=g), dim=-1).requires_grad_()
    g1 = torch.autograd.grad(clip_loss(50. * img @ txt.T), (img, txt))
    g2 = torch.autograd.grad(ref_clip_loss(img, txt, 50.), (img, txt))
    for a, b in zip(g1, g2): torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)

class _FakeCLIP(nn.Module):
    "encode_text: a fixed random embedding per token sequence (sum of token embeddings); unnormalised on purpose."
    def __init__(self, vocab=5000, d=24):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
    def encode_text(self, tokens): return self.emb(tokens).sum(1) * 3.0

def _tokenizer(texts):
    "Deterministic toy tokenizer: character codes, padded to 40."
    out = torch.zeros(len(texts), 40, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [ord(c) % 5000 for c in t][:40]
        out[i, :len(ids)] = torch.tensor(ids)
    return out

def ref_clip_classifier(classnames, template, model):
    "Tip:utils.py#L18-35 (`clip_classifier`), with the toy tokenizer in place of clip.tokenize."
    with torch.no_grad():
        clip_weights = []
        for classname in classnames:
            classname = classname.replace('_', ' ')
            texts = [t.format(classname) for t in template]
            class_embeddings = model.encode_text(_tokenizer(texts))
            class_embeddings /= class_embeddings.norm(dim=-1, keepdim=True)
            class_embedding = class_embeddings.mean(dim=0)
            class_embedding /= class_embedding.norm()
            clip_weights.append(class_embedding)
        return torch.stack(clip_weights, dim=1)

@pytest.mark.parametrize('templates', [['a photo of a {}.'],
                                       ['itap of a {}.', 'a bad photo of the {}.', 'a origami {}.', 'a photo of the large {}.',
                                        'a {} in a video game.', 'art of the {}.', 'a photo of the small {}.']])
def test_prompt_ensemble_matches_tip_adapter(templates):
    torch.manual_seed(0)
    model = _FakeCLIP()
    names = ['golden retriever', 'tabby cat', 'sea lion', 'red fox']  # no '_' (the library leaves names as given)
    ours = class_text_features(model, _tokenizer, names, templates)
    ref = ref_clip_classifier(names, templates, model)
    assert ours.shape == (len(names), 24)
    torch.testing.assert_close(ours, ref.t(), rtol=TOL, atol=TOL)
