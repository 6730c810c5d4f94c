"""Check the library on a CUDA machine: every notebook cell (mini and real-CLIP `#| gpu` cells), and every strategy on
ViT-B/16 under bf16 and fp16 autocast; a table per cell and per strategy, and a JSON report.

    python tools/gpu_check.py                          # both parts on CUDA; report in gpu_check.json
    python tools/gpu_check.py --part strategies        # only the strategies (or --part notebooks)
    python tools/gpu_check.py --device cpu --part strategies --strategies coop --precisions fp32   # a dry run here

Where pretrained weights cannot be fetched, the notebooks run with `CLIP_STRATEGIES_RANDOM_WEIGHTS=1` in their environment:
their real-CLIP cells then build the real architecture with random weights (and say so) instead of skipping.
The strategy part always uses random weights (`MODEL.BACKBONE.PRETRAINED ''`): it checks that each runs, not how well.
Without CUDA (and without `--device cpu`) it says so and exits 1.
"""
import argparse, copy, json, os, re, sys, tempfile, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def fake_tree(root:Path, classes=('cat', 'dog'), train:int=2, test:int=1)->Path:
    "A tiny image folder (`imagefolder` layout): `train` and `test` generated 64px images per class."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in [('train', train), ('test', test)]:
        for c in classes:
            (root/split/c).mkdir(parents=True, exist_ok=True)
            for i in range(n): Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root/split/c/f'{i}.png')
    return root

_BUILT = {}
def built(arch:str, device:str='cpu')->tuple:
    "`load_clip(arch, '')` (random weights), built once per process and device (callers take deep copies)."
    from clip_strategies.models import load_clip
    if (arch, device) not in _BUILT: _BUILT[arch, device] = load_clip(arch, '', device=device)
    return _BUILT[arch, device]

def patch_cli(cli, device:str='cpu', setattr=setattr):
    "Make `cli.train` take deep copies of the built models and write no checkpoints (pass a monkeypatch's setattr in tests)."
    from clip_strategies.callbacks import RunContext
    def fake(name, pretrained=None, device_=None):
        model, preprocess, tokenizer = built(name, device)
        return copy.deepcopy(model), preprocess, tokenizer
    setattr(cli, 'load_clip', fake)
    setattr(cli, 'run_context', lambda cfg, resume=False, progress=True, strategy='custom', trackers=None:
            RunContext(cfg['TRAIN.PRECISION'], progress, 0, None, False, cfg['MODEL.BACKBONE.NAME'], strategy, trackers=trackers))

def spec_of(name:str): return name.split('+') if '+' in name else name

def every_strategy()->list:
    "Every registered strategy, then the documented combinations (`strategy.COMBINATION_RECIPES`) as 'a+b'."
    from clip_strategies.strategy import COMBINATION_RECIPES, list_strategies
    return list_strategies() + ['+'.join(k) for k in COMBINATION_RECIPES]

def overrides(arch:str, name:str, tree:Path, out:Path, precision:str='fp32')->dict:
    "Two steps of batch 2 on one shot per class, the rest from the strategy's own (authors') recipe on `arch`."
    return {'TRAINER.NAME': spec_of(name), 'MODEL.BACKBONE.NAME': arch, 'MODEL.BACKBONE.PRETRAINED': '',
            'DATASET.NAME': 'imagefolder', 'DATASET.ROOT': str(tree), 'DATASET.NUM_SHOTS': 1, 'OPTIM.MAX_ITER': 2,
            'DATALOADER.TRAIN_X.BATCH_SIZE': 2, 'DATALOADER.TEST.BATCH_SIZE': 4, 'TRAIN.PRINT_FREQ': 0,
            'TRAIN.PRECISION': precision, 'OUTPUT_DIR': str(out)}

def save_part(res:dict, arch:str, folder:Path)->tuple:
    "What the run changed: the strategy's learned-part file; the base tensors it trained and the buffers training moved."
    import torch
    from clip_strategies.anatomy import trainable_names
    from clip_strategies.core import save_safetensors
    from clip_strategies.strategy import save_learned
    model, strategy = res['model'], res['strategy']
    learned = set(strategy.learned_names(model))
    part = save_learned(strategy, model, folder/'learned.safetensors', arch) if learned or strategy.fitted_state() else None
    sd, base = model.state_dict(), built(arch, str(next(model.parameters()).device.type))[0].state_dict()
    changed = [] if part else [n for n, b in model.named_buffers() if n in base and not torch.equal(b, base[n])]  # a whole-model save keeps BatchNorm's statistics; a learned part must carry them itself
    chosen = {n: sd[n] for n in trainable_names(model) + changed if n not in learned}
    if chosen: save_safetensors(chosen, folder/'selected.safetensors')
    return part, folder/'selected.safetensors' if chosen else None

def load_part(arch:str, spec, part, selected, device:str='cpu'):
    "A fresh model with the saved part loaded, and its strategy."
    from clip_strategies.core import read_safetensors
    from clip_strategies.strategy import get_strategy, load_learned
    model = copy.deepcopy(built(arch, device)[0])
    strategy = load_learned(model, part, arch) if part else get_strategy(spec)
    if not part: strategy.apply(model)
    if selected:
        _, unexpected = model.load_state_dict(read_safetensors(selected)[0], strict=False)
        if unexpected: raise AssertionError(f"saved tensors the model does not have: {unexpected[:5]}")
    return model, strategy

def check_strategy(arch:str, name:str, tree:Path, folder:Path, precision:str='fp32', device:str='cpu', tol:float=1e-4)->dict:
    "Apply, two steps, evaluate, save the learned part, load it on a fresh model: the same logits (raises if not)."
    import torch
    from clip_strategies import cli
    from clip_strategies.config import load_config
    from clip_strategies.evaluate import class_scores
    t0 = time.time()
    res = cli.train(load_config(None, overrides(arch, name, tree, folder/'out', precision)), progress=False, log=lambda *a: None)
    m, strategy, tok, test = res['metrics'], res['strategy'], res['tokenizer'], res['splits']['test']
    if m['card']['steps_run'] != (2 if strategy.trains else 0): raise AssertionError(f"ran {m['card']['steps_run']} steps, not 2")
    logits = class_scores(res['model'], tok, test, 4, strategy)[0]
    if not torch.isfinite(logits).all(): raise AssertionError(f"non-finite logits {logits}")
    part, selected = save_part(res, arch, folder)
    diff = 0.
    if part or selected:
        model, loaded = load_part(arch, m['spec'], part, selected, device)
        diff = (class_scores(model, tok, test, 4, loaded)[0] - logits).abs().max().item()
        if diff > tol * max(1., logits.abs().max().item()): raise AssertionError(f"reloaded logits differ by {diff:.3g}")
    return dict(seconds=round(time.time() - t0, 1), accuracy=m['accuracy'], saved=bool(part or selected), max_logit_diff=diff)

def last_line(e:BaseException)->str:
    "The error's last line, as a table shows it."
    return (f"{type(e).__name__}: {e}".strip().splitlines() or [''])[-1][:300]

def run_strategies(names:list, precisions:list, device:str, arch:str='ViT-B-16')->list:
    "Every strategy under every precision on `arch`: one row each (ok / failed and the error's last line)."
    from clip_strategies import cli
    from clip_strategies.strategy import StrategyError, get_strategy
    patch_cli(cli, device)
    rows, tmp = [], Path(tempfile.mkdtemp(prefix='gpu_check_'))
    tree = fake_tree(tmp/'tree')
    for precision in precisions:
        for name in names:
            folder = tmp/f'{precision}_{name}'; folder.mkdir()
            try: row = dict(status='ok', **check_strategy(arch, name, tree, folder, precision, device, 1e-2 if precision != 'fp32' else 1e-4))
            except Exception as e: row = dict(status='failed', error=last_line(e), traceback=traceback.format_exc()[-3000:])
            rows.append(dict(part='strategies', arch=arch, device=device, precision=precision, strategy=name, **row))
            print(f"{rows[-1]['status']:6} {precision:5} {name:24} {row.get('seconds', '')!s:>6} {row.get('error', '')}", flush=True)
    return rows

def cell_flags(src:str)->bool:
    "Whether a notebook cell is skipped everywhere (`#| eval: false`)."
    return bool(re.search(r'^#\|\s*eval:\s*false', src, re.M))

def run_notebook(path:Path, timeout:int=1800)->list:
    "Execute every code cell of `path` (gpu and slow ones too) in one kernel, without saving: a row per cell."
    import nbformat
    from nbclient import NotebookClient
    nb, rows = nbformat.read(path, as_version=4), []
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != 'code' or cell_flags(cell.source): continue
            t0 = time.time()
            try: client.execute_cell(cell, i); row = dict(status='ok')
            except Exception as e: row = dict(status='failed', error=last_line(e))
            gpu = bool(re.search(r'^#\|\s*gpu', cell.source, re.M))
            rows.append(dict(part='notebooks', notebook=path.name, cell=i, gpu=gpu, seconds=round(time.time() - t0, 1), **row))
            if row['status'] != 'ok': print(f"failed {path.name} cell {i}{' (gpu)' if gpu else ''}: {row['error']}", flush=True)
    print(f"{path.name}: {sum(r['status'] == 'ok' for r in rows)} of {len(rows)} cells ok", flush=True)
    return rows

def weights_fetchable(name:str='ViT-B-16', tag:str='openai')->bool:
    "Whether `load_clip(name, tag)` can get its weights here (cached or downloadable)."
    from clip_strategies.models import real_clip_unavailable
    return real_clip_unavailable(name, tag, need_gpu=False) is None

def run_notebooks(paths:list)->list:
    "Every notebook's cells; the real-CLIP cells with random weights (`CLIP_STRATEGIES_RANDOM_WEIGHTS=1`) where weights cannot be fetched."
    if not weights_fetchable(): os.environ['CLIP_STRATEGIES_RANDOM_WEIGHTS'] = '1'; print("note: pretrained weights cannot be fetched: real-CLIP cells run with random weights")
    return [r for p in paths for r in run_notebook(p)]

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda', help="cuda (default), or cpu for a dry run of the strategy part")
    ap.add_argument('--part', choices=['all', 'notebooks', 'strategies'], default='all')
    ap.add_argument('--strategies', nargs='*', default=None, help="names or 'a+b' combinations (default: every one and the documented combinations)")
    ap.add_argument('--precisions', nargs='*', default=['bf16', 'fp16'], help="TRAIN.PRECISION values to run each strategy under")
    ap.add_argument('--arch', default='ViT-B-16')
    ap.add_argument('--notebooks', nargs='*', default=None, help="notebooks to run (default: every one in nbs/)")
    ap.add_argument('--report', default='gpu_check.json', help="where the JSON report goes")
    return ap.parse_args(argv)

def main(argv=None)->int:
    a = parse_args(argv)
    import torch
    if a.device.startswith('cuda') and not torch.cuda.is_available():
        print("error: no CUDA GPU on this machine; run it where one is, or pass --device cpu --part strategies for a dry run", file=sys.stderr)
        return 1
    t0, rows = time.time(), []
    if a.part in ('all', 'notebooks'):
        if a.device != 'cuda': print("note: the notebooks pick their own device (CUDA when there is one)")
        rows += run_notebooks([Path(p) for p in a.notebooks] if a.notebooks else sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_')))
    if a.part in ('all', 'strategies'):
        rows += run_strategies(a.strategies or every_strategy(), a.precisions, a.device, a.arch)
    failed = [r for r in rows if r['status'] != 'ok']
    report = dict(device=torch.cuda.get_device_name() if a.device.startswith('cuda') else a.device, torch=torch.__version__,
                  seconds=round(time.time() - t0, 1), ok=len(rows) - len(failed), failed=len(failed), rows=rows)
    from clip_strategies.core import atomic_write
    atomic_write(Path(a.report), json.dumps(report, indent=2))
    print(f"{len(rows) - len(failed)} of {len(rows)} ok in {report['seconds']} s; report: {a.report}")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
