"""Execute notebooks in place and save them clean, with their outputs and widget state, so the docs site and GitHub show
every result. Real-CLIP cells run too: without a GPU and the weights they print why they were skipped.

    python tools/run_nbs.py                 # every notebook in nbs/
    python tools/run_nbs.py nbs/20_full.ipynb nbs/21_frozen_vision.ipynb

Each notebook records, in its metadata, a hash of its own code cells and of the library's code when it ran
(`code_hash`); `tests/test_notebooks.py` checks that every notebook has outputs and that the hashes match the current
code, so saved results can never silently come from older code. Cells marked `#| eval: false` are not executed."""
import argparse, asyncio, hashlib, json, os, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
META = 'clip_strategies'

def code_cells(nb:dict)->list: return [''.join(c['source']) if isinstance(c['source'], list) else c['source'] for c in nb['cells'] if c['cell_type'] == 'code']

def library_hash(root:Path=ROOT)->str:
    "Hash of the package's code, ignoring the cell-marker comments nbdev writes."
    h = hashlib.sha256()
    for p in sorted((root/'clip_strategies').glob('*.py')):
        if p.name == '_modidx.py': continue
        h.update(p.name.encode()); h.update(re.sub(r'(?m)^# %%.*\n', '', p.read_text()).encode())
    return h.hexdigest()[:16]

def notebook_hash(nb:dict)->str:
    "Hash of a notebook's code cells."
    return hashlib.sha256('\n\x00\n'.join(s.strip() for s in code_cells(nb)).encode()).hexdigest()[:16]

def skipped(src:str)->bool: return bool(re.search(r'^#\|\s*eval:\s*false', src, re.M))

def run(path:Path, timeout:int=1800)->dict:
    "Execute `path` in place (cwd: its folder), store widget state and the code hashes, clean it; returns its stats."
    import nbformat
    from nbclient import NotebookClient
    class Client(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if cell.cell_type == 'code' and skipped(cell.source): cell.outputs = []; return cell
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    Client(nb, timeout=timeout, kernel_name='python3', store_widget_state=True, resources={'metadata': {'path': str(path.parent)}}).execute()
    secs = round(time.time() - t0, 1)
    plots = sum(1 for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if 'image/png' in o.get('data', {}))
    nb.metadata.pop('jupytext', None)
    nb.metadata[META] = dict(code_hash=notebook_hash(nb), library_hash=library_hash(), cpu_seconds=secs, plots=plots)
    from nbdev.clean import clean_nb
    clean_nb(nb, allowed_metadata_keys=[META])
    nbformat.write(nb, path)
    return dict(notebook=path.name, seconds=secs, plots=plots)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help='notebooks to run (default: every notebook in nbs/)')
    args = ap.parse_args()
    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT/'nbs').glob('*.ipynb'))
    # OMP_NUM_THREADS is left unset: the comparisons' child processes then share the cores (compare.child_env);
    # set to 2, two children ran four threads on two cores and a retrieval comparison took several times longer.
    for p in paths:
        r = run(p)
        print(f"{r['notebook']:28} {r['seconds']:7.1f} s  {r['plots']:3} plots", flush=True)

if __name__ == '__main__': main()
