"""Fidelity: Hate-CLIPper's head (projections, cross fusion, pre-output, one logit, BCE), transcribed from the authors' code,
vs `clip_strategies.memes`.

Authors' code: gokulkarthik/hateclipper @ 86ad7f15 (alias `HC` in /work/shared/RECIPES.md §0). RECIPES.md §1.12:
  * maps: HC:engine.py#L80-87 (`image_map`/`text_map`: Linear(hidden_size, map_dim), Dropout(drop_probs[0]); 1 mapping layer);
  * pre-output and output: HC:engine.py#L89-115 (cross: input map_dim²; Dropout(drop_probs[1]), then per pre-output layer
    Linear(→ map_dim), ReLU, Dropout(drop_probs[2]); output Linear(→ 1));
  * the loss: HC:engine.py#L156 (`BCEWithLogitsLoss(reduction='mean')`) and #L381-389 (logits squeezed, labels as float);
  * forward: HC:engine.py#L170-206 (pooler_output of each tower → map → L2-normalise → `bmm` outer product, flattened);
  * run.sh values: map_dim 32, 1 pre-output layer, drop_probs [0.2, 0.4, 0.1] (HC:run.sh#L8-12).
The features fed in are HF CLIP's `pooler_output`s, the pooled hidden states BEFORE CLIP's projections; the library reads
them from open_clip by taking the projections out (`memes.pooled_features`), checked below. The library's weights are
copied INTO the transcription.
"""
import sys
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from torch import nn
sys.path.insert(0, str(Path(__file__).parent))
from tiny_backbones import tiny_clip
from clip_strategies.memes import MemeClassifier, meme_loss, meme_score, pooled_features, MEME_RECIPES

TOL = 1e-5

class RefHateClipperHead(nn.Module):
    "HC:engine.py#L78-115 (use_pretrained_map False, fusion 'cross', dataset 'original'), weights only."
    def __init__(self, image_hidden, text_hidden, map_dim, drop_probs, num_pre_output_layers=1):
        super().__init__()
        self.map_dim = map_dim
        self.image_map = nn.Sequential(nn.Linear(image_hidden, map_dim), nn.Dropout(p=drop_probs[0]))
        self.text_map = nn.Sequential(nn.Linear(text_hidden, map_dim), nn.Dropout(p=drop_probs[0]))
        pre_output_input_dim = map_dim ** 2
        pre_output_layers = [nn.Dropout(p=drop_probs[1])]
        output_input_dim = pre_output_input_dim
        if num_pre_output_layers >= 1:
            pre_output_layers.extend([nn.Linear(pre_output_input_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])])
            output_input_dim = map_dim
        for _ in range(1, num_pre_output_layers):
            pre_output_layers.extend([nn.Linear(map_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])])
        self.pre_output = nn.Sequential(*pre_output_layers)
        self.output = nn.Linear(output_input_dim, 1)
        self.cross_entropy_loss = torch.nn.BCEWithLogitsLoss(reduction='mean')

    def forward(self, image_features, text_features, labels):
        "HC:engine.py#L272-289 then #L314-320 and #L381-389, from the pooled features on."
        image_features = self.image_map(image_features)
        text_features = self.text_map(text_features)
        image_features = F.normalize(image_features, p=2, dim=1)
        text_features = F.normalize(text_features, p=2, dim=1)
        features = torch.bmm(image_features.unsqueeze(2), text_features.unsqueeze(1))
        features = features.reshape(features.shape[0], -1)
        features_pre_output = self.pre_output(features)
        logits = self.output(features_pre_output).squeeze(dim=1)
        return logits, self.cross_entropy_loss(logits, labels.float())

def _copy_into(lib:MemeClassifier, ref:RefHateClipperHead):
    "The library's projections and head into the transcription, layer by layer."
    lins = [lib.image_map, lib.text_map] + [m for m in lib.head if isinstance(m, nn.Linear)]
    rlins = [ref.image_map[0], ref.text_map[0]] + [m for m in ref.pre_output if isinstance(m, nn.Linear)] + [ref.output]
    assert len(lins) == len(rlins)
    with torch.no_grad():
        for a, b in zip(lins, rlins):
            assert a.weight.shape == b.weight.shape, (a, b)
            b.weight.copy_(a.weight); b.bias.copy_(a.bias)

@pytest.fixture(scope='module')
def clip(): return tiny_clip()

def _pair(clip, map_dim, drop_probs, layers, seed):
    torch.manual_seed(seed)
    lib = MemeClassifier(clip, 'fim', 'hateclipper', map_dim=map_dim, hidden=map_dim, dropout=drop_probs, features='pooled', pre_output_layers=layers)
    ref = RefHateClipperHead(64, 64, map_dim, drop_probs, layers)
    _copy_into(lib, ref)
    return lib, ref

@pytest.mark.parametrize('map_dim,drop_probs,layers', [(32, (0.2, 0.4, 0.1), 1), (8, (0.1, 0.4, 0.2), 1), (16, (0.2, 0.4, 0.1), 3), (8, (0., 0., 0.), 0)])
def test_head_and_loss_match_authors_eval(clip, map_dim, drop_probs, layers):
    lib, ref = _pair(clip, map_dim, drop_probs, layers, map_dim + layers)
    img, txt, y = torch.randn(16, 64) * 3, torch.randn(16, 64) * 3, torch.randint(0, 2, (16,))
    lib.eval(); ref.eval()
    with torch.no_grad():
        logits_ref, loss_ref = ref(img, txt, y)
        out = lib.classify(img, txt)['logits']
    assert out.shape == (16, 1)
    torch.testing.assert_close(meme_score(out), logits_ref, rtol=TOL, atol=TOL)
    torch.testing.assert_close(meme_loss(out, y), loss_ref, rtol=TOL, atol=TOL)

def test_head_matches_authors_in_training_mode(clip):
    "Same dropout masks: both draw them in the same order (image map, text map, fusion, pre-output)."
    lib, ref = _pair(clip, 32, (0.2, 0.4, 0.1), 1, 0)
    img, txt, y = torch.randn(16, 64), torch.randn(16, 64), torch.randint(0, 2, (16,))
    lib.train(); ref.train()
    torch.manual_seed(7); logits_ref, loss_ref = ref(img, txt, y)
    torch.manual_seed(7); out = lib.classify(img, txt)['logits']
    torch.testing.assert_close(out[:, 0], logits_ref, rtol=TOL, atol=TOL)
    loss = meme_loss(out, y)
    torch.testing.assert_close(loss, loss_ref, rtol=TOL, atol=TOL)
    loss.backward(); loss_ref.backward()
    torch.testing.assert_close(lib.image_map.weight.grad, ref.image_map[0].weight.grad, rtol=TOL, atol=TOL)

def test_pooled_features_are_before_the_projections(clip):
    "HF's pooler_output is the pooled hidden state that CLIP's projection maps into the joint space."
    x, tokens = torch.randn(3, 3, 32, 32), clip.tokenizer(['a cat', 'hate speech here', 'a dog on a mat'])
    with torch.no_grad():
        img, txt = pooled_features(clip, x, tokens)
        torch.testing.assert_close(img @ clip.visual.proj, clip.encode_image(x), rtol=TOL, atol=TOL)
        torch.testing.assert_close(txt @ clip.text_projection, clip.encode_text(tokens), rtol=TOL, atol=TOL)
    assert img.shape == (3, 64) and txt.shape == (3, 64) and img.norm(dim=-1).std() > 0  # un-normalised
    assert isinstance(clip.visual.proj, nn.Parameter) and isinstance(clip.text_projection, nn.Parameter)  # put back

def test_real_clip_recipe_is_the_authors():
    "run.sh: map_dim 32, 1 pre-output layer, drop_probs [0.2, 0.4, 0.1], lr 1e-4, batch 16, 20 epochs; AdamW wd 1e-4; clip 0.1."
    r = MEME_RECIPES['authors']
    assert (r['fusion'], r['head'], r['features'], r['map_dim'], r['hidden'], r['pre_output_layers']) == ('fim', 'hateclipper', 'pooled', 32, 32, 1)
    assert tuple(r['dropout']) == (0.2, 0.4, 0.1) and (r['lr'], r['weight_decay'], r['batch_size'], r['epochs']) == (1e-4, 1e-4, 16, 20)
    assert (r['max_grad_norm'], r['schedule'], r['select']) == (0.1, 'constant', 'best')
