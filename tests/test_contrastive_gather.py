"Contrastive training across processes: two gloo processes with B pairs each train like one process with 2B pairs."
import socket
from contextlib import nullcontext
from types import SimpleNamespace
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

B, K, WORLD = 4, 2, 2  # pairs per process per micro-batch, micro-batches per step, processes

def _setup()->tuple:
    "The mini CLIP, its tokenizer and the mini captions (the same in every process)."
    from clip_strategies.models import load_clip
    from clip_strategies.mini import mini_captions
    torch.set_num_threads(1)
    model, pre, tok = load_clip('mini', device='cpu')
    return model, tok, mini_captions('train', pre)

def _step(model, fwd_model, tok, caps, start:int, batch:int, steps:int, accelerator=None)->dict:
    "One training step of the contrastive objective on pairs `start`.. of the captions, as the CLI builds it (`accumulate`)."
    from clip_strategies.objectives import ContrastiveLoss
    obj, n, _ = ContrastiveLoss(tok).accumulate(batch, steps)
    model.zero_grad(set_to_none=True)
    learn = SimpleNamespace(model=model, fwd_model=fwd_model, device=torch.device('cpu'), autocast=nullcontext, training=True,
                            xb=torch.stack([caps[i][0] for i in range(start, start + n)]), yb=[caps[i][1] for i in range(start, start + n)])
    if accelerator is not None: learn.accelerator = accelerator
    obj.predict(learn); obj.get_loss(learn); learn.loss.backward(); obj.after_backward(learn)
    return dict(loss=learn.loss.detach().clone(), shape=tuple(learn.preds.shape), targets=obj.targets(learn).clone(),
                grads={n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

def _valid(model, tok, caps, start:int, n:int, accelerator=None)->torch.Tensor:
    "The validation loss of pairs `start`..`start + n` (no gradients)."
    from clip_strategies.objectives import ContrastiveLoss
    obj = ContrastiveLoss(tok)
    learn = SimpleNamespace(model=model, fwd_model=model, device=torch.device('cpu'), autocast=nullcontext, training=False,
                            xb=torch.stack([caps[i][0] for i in range(start, start + n)]), yb=[caps[i][1] for i in range(start, start + n)])
    if accelerator is not None: learn.accelerator = accelerator
    with torch.no_grad(): obj.predict(learn); obj.get_loss(learn)
    return learn.loss

def _worker(rank:int, port:int, folder:str):
    "One of two processes: each case's loss and DDP-averaged gradients, written to `folder/rank{rank}.pt`."
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD)
    try:
        model, tok, caps = _setup()
        out = {}
        for steps in (1, K):  # plain, then accumulated: each process takes its slice of the global batch, in rank order
            # by hand, as DDP does: the gradients all-reduced and averaged after the step
            r = _step(model, model, tok, caps, rank * B * steps, B, steps, SimpleNamespace(num_processes=WORLD, no_sync=lambda m: nullcontext()))
            for g in r['grads'].values(): dist.all_reduce(g); g /= WORLD
            out[('manual', steps)] = r
            # through DDP itself (its gradient hooks, and `no_sync` for all but the last micro-batch)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            out[('ddp', steps)] = _step(model, ddp, tok, caps, rank * B * steps, B, steps, SimpleNamespace(num_processes=WORLD, no_sync=lambda m: m.no_sync()))
            del ddp
        out['valid'] = _valid(model, tok, caps, rank * B, B, SimpleNamespace(num_processes=WORLD))
        torch.save(out, f'{folder}/rank{rank}.pt')
    finally: dist.destroy_process_group()

def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _close(a:dict, b:dict):
    "Gradients equal to float tolerance, relative to each tensor's largest entry."
    assert sorted(a) == sorted(b)
    for n in a: torch.testing.assert_close(a[n], b[n], rtol=0, atol=1e-5 * max(1., b[n].abs().max().item()), msg=n)

@pytest.fixture(scope='module')
def two_processes(tmp_path_factory)->list:
    folder = tmp_path_factory.mktemp('gather')
    mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder/f'rank{r}.pt') for r in range(WORLD)]

@pytest.mark.parametrize('how', ['manual', 'ddp'])
@pytest.mark.parametrize('steps', [1, K])
def test_two_processes_equal_one_with_twice_the_batch(two_processes, how, steps):
    model, tok, caps = _setup()
    one = _step(model, model, tok, caps, 0, WORLD * B, steps)
    n = B * steps
    for rank, res in enumerate(two_processes):
        r = res[(how, steps)]
        assert r['shape'] == (n, WORLD * n)  # this process's pairs against every process's
        assert r['targets'].tolist() == list(range(rank * n, rank * n + n))
        _close(r['grads'], one['grads'])
    mean = sum(res[(how, steps)]['loss'] for res in two_processes) / WORLD
    torch.testing.assert_close(mean, one['loss'], rtol=1e-5, atol=1e-6)
    assert one['shape'] == (WORLD * n, WORLD * n)

def test_validation_gathers_too(two_processes):
    model, tok, caps = _setup()
    mean = sum(res['valid'] for res in two_processes) / WORLD
    torch.testing.assert_close(mean, _valid(model, tok, caps, 0, WORLD * B), rtol=1e-5, atol=1e-6)

def test_gather_changes_the_loss(two_processes):
    "The check can fail: without the gather each process would see its own pairs only, a different loss."
    model, tok, caps = _setup()
    alone = [_step(model, model, tok, caps, r * B, B, 1)['loss'] for r in range(WORLD)]
    gathered = [res[('manual', 1)]['loss'] for res in two_processes]
    assert abs(sum(alone).item() - sum(gathered).item()) > 1e-3

def test_one_process_makes_no_distributed_call(monkeypatch):
    import torch.distributed.nn.functional as dnf
    def refuse(*a, **k): raise AssertionError("torch.distributed called with one process")
    for mod, name in [(dist, 'get_rank'), (dist, 'get_world_size'), (dist, 'all_gather'), (dist, 'is_initialized'), (dnf, 'all_gather')]:
        monkeypatch.setattr(mod, name, refuse)
    model, tok, caps = _setup()
    for acc in (None, SimpleNamespace(num_processes=1, no_sync=refuse)):
        for steps in (1, K):
            r = _step(model, model, tok, caps, 0, B, steps, acc)
            assert r['shape'] == (B * steps, B * steps) and r['targets'].tolist() == list(range(B * steps))
