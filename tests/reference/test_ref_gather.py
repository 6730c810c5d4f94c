"""Fidelity: contrastive training across processes, transcribed from open_clip, vs `clip_strategies.objectives`.

Reference code: mlfoundations/open_clip, src/open_clip/loss.py, read in the installed open_clip 3.3.0:
  * `gather_features` #L21-65, the torch.distributed branch with `gather_with_grad=True` (#L50-52):
    `all_image_features = torch.cat(torch.distributed.nn.all_gather(image_features), dim=0)`, the same for text;
  * `ClipLoss.get_ground_truth` #L91-102: `labels = arange(num_logits)`, plus `num_logits * rank` when `world_size > 1
    and local_loss`;
  * `ClipLoss.get_logits` #L104-129, `local_loss` branch #L116-118: `logits_per_image = logit_scale * image_features @
    all_text_features.T`, `logits_per_text = logit_scale * text_features @ all_image_features.T`;
  * `ClipLoss.forward` #L132-155, #L150-153: `(F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2`.
The library's `gather_pairs` keeps this process's own features as they are (their gradient flows directly) and takes the
others' through the all-gather, where open_clip takes all of them through it; the gradients must still be the same.
RECIPES.md has no contrastive-loss row. Two gloo processes on the CPU; the transcription exists for this test only.
"""
import socket
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

B, D, WORLD, SCALE = 5, 8, 2, 14.3

def ref_gather_features(image_features, text_features):
    "open_clip loss.py gather_features #L50-52 (torch.distributed, gather_with_grad=True)."
    all_image_features = torch.cat(torch.distributed.nn.all_gather(image_features), dim=0)
    all_text_features = torch.cat(torch.distributed.nn.all_gather(text_features), dim=0)
    return all_image_features, all_text_features

def ref_clip_loss_local(image_features, text_features, logit_scale, rank):
    "open_clip ClipLoss(local_loss=True, gather_with_grad=True): get_logits #L116-118, get_ground_truth #L94-96, forward #L150-153."
    all_image_features, all_text_features = ref_gather_features(image_features, text_features)
    logits_per_image = logit_scale * image_features @ all_text_features.T
    logits_per_text = logit_scale * text_features @ all_image_features.T
    labels = torch.arange(logits_per_image.shape[0], dtype=torch.long) + logits_per_image.shape[0] * rank
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

def _features(rank:int)->tuple:
    "This process's normalised image and caption features, as leaves with gradients (different on every rank)."
    g = torch.Generator().manual_seed(100 + rank)
    img, txt = F.normalize(torch.randn(B, D, generator=g), dim=-1), F.normalize(torch.randn(B, D, generator=g), dim=-1)
    return img.requires_grad_(), txt.requires_grad_()

def _worker(rank:int, port:int, folder:str):
    from clip_strategies.objectives import ContrastiveLoss, gather_pairs, clip_loss
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD)
    try:
        img, txt = _features(rank)
        logits, logits_t, labels = ContrastiveLoss(tokenizer=None).logits(img, txt, SCALE, gather_pairs(img, txt))
        ours = clip_loss(logits, logits_t, labels); ours.backward()
        img_r, txt_r = _features(rank)
        ref = ref_clip_loss_local(img_r, txt_r, SCALE, rank); ref.backward()
        torch.save(dict(ours=ours.detach(), ref=ref.detach(), labels=labels, shape=tuple(logits.shape),
                        grads=(img.grad, txt.grad), ref_grads=(img_r.grad, txt_r.grad)), f'{folder}/rank{rank}.pt')
    finally: dist.destroy_process_group()

def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_gather_and_loss_match_open_clips_local_loss_with_gathered_gradients(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        r = torch.load(tmp_path/f'rank{rank}.pt')
        assert r['shape'] == (B, WORLD * B) and r['labels'].tolist() == list(range(rank * B, rank * B + B))
        torch.testing.assert_close(r['ours'], r['ref'], rtol=1e-6, atol=1e-6)
        for ours, ref in zip(r['grads'], r['ref_grads']):
            assert ref is not None and ref.abs().sum() > 0
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
