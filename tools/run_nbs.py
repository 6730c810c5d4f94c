"""Execute notebooks in place and save them clean, with their outputs and widget state, so the docs site and GitHub show
every result. Real-CLIP cells run too: without a GPU and the weights they print why they were skipped.

    python tools/run_nbs.py                 # every notebook in nbs/
    python tools/run_nbs.py nbs/20_full.ipynb nbs/21_frozen_vision.ipynb

Each notebook records, in its metadata, a hash of its own code cells and of the library's code when it ran
(`code_hash`); `tests/test_notebooks.py` checks that every notebook has outputs and that the hashes match the current
code, so saved results can never silently come from older code. Cells marked `#| eval: false` are not executed.

It also records the git commit of HEAD (`commit`) and writes it into the notebook's Colab install cell, which installs
that commit: a reader on Colab runs the library the saved outputs came from. So the library must be committed first
(the files `pip install` brings: clip_strategies/, setup.py, settings.ini, pyproject.toml); a run refuses otherwise.
`tests/test_colab.py` checks the cell, the metadata and the library at that commit agree."""
import argparse, asyncio, hashlib, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
META = 'clip_strategies'

def code_cells(nb:dict)->list: return [''.join(c['source']) if isinstance(c['source'], list) else c['source'] for c in nb['cells'] if c['cell_type'] == 'code']

def hash_library_files(files:dict)->str:
    "Hash of the package's modules {file name: text}, ignoring `_modidx.py` and the cell-marker comments nbdev writes."
    h = hashlib.sha256()
    for name in sorted(files):
        if name == '_modidx.py' or not name.endswith('.py'): continue
        h.update(name.encode()); h.update(re.sub(r'(?m)^# %%.*\n', '', files[name]).encode())
    return h.hexdigest()[:16]

def library_hash(root:Path=ROOT)->str:
    "Hash of the package's code in the working tree."
    return hash_library_files({p.name: p.read_text() for p in (root/'clip_strategies').glob('*.py')})

def git(*args, root:Path=ROOT)->str: return subprocess.run(['git', *args], cwd=root, capture_output=True, text=True, check=True).stdout

def library_hash_at(commit:str, root:Path=ROOT)->str:
    "Hash of the package's code at git `commit` (as `pip install git+...@commit` brings it)."
    names = [n for n in git('ls-tree', '--name-only', commit, 'clip_strategies/', root=root).split() if n.count('/') == 1]
    return hash_library_files({n.split('/')[1]: git('show', f'{commit}:{n}', root=root) for n in names if n.endswith('.py')})

INSTALLED = ('clip_strategies', 'setup.py', 'settings.ini', 'pyproject.toml')  # what `pip install git+...` builds from

def head_commit(root:Path=ROOT)->str:
    "HEAD's commit, refused while the files `pip install` brings have uncommitted changes (the cell would install other code)."
    dirty = git('status', '--porcelain', '--', *INSTALLED, root=root).strip()
    if dirty: sys.exit("error: commit the library first: the Colab install cell names HEAD's commit, and these files differ "
                       f"from it:\n{dirty}")
    return git('rev-parse', 'HEAD', root=root).strip()

INSTALL_CELL = """#| hide
#| eval: false
# On Colab: install the library at the commit this page's outputs came from (elsewhere this cell does nothing).
# tools/run_nbs.py writes COMMIT when it runs the notebook and saves it.
COMMIT = '{commit}'
import sys, subprocess
if 'google.colab' in sys.modules:
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', f'git+{url}@{{COMMIT}}'], check=True)"""
COMMIT_LINE = re.compile(r"^COMMIT = '([^']*)'$", re.M)

def repo_url(root:Path=ROOT)->str:
    "The repository's URL (settings.ini's git_url)."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(root/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']['git_url']

def install_cells(nb:dict)->list:
    "Indices of the notebook's Colab install cells."
    return [i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' and '# On Colab: install' in code_source(c)]

def code_source(c)->str: return ''.join(c['source']) if isinstance(c['source'], list) else c['source']

def stamp_commit(nb, commit:str)->None:
    "Write `commit` into the notebook's Colab install cell and its metadata; refuse a notebook without exactly one such cell."
    cells = install_cells(nb)
    if len(cells) != 1: sys.exit(f"error: a notebook needs exactly one Colab install cell (INSTALL_CELL in tools/run_nbs.py), found {len(cells)}")
    c = nb['cells'][cells[0]]
    src, n = COMMIT_LINE.subn(f"COMMIT = '{commit}'", code_source(c))
    if n != 1: sys.exit("error: the Colab install cell has no line `COMMIT = '...'` (see INSTALL_CELL in tools/run_nbs.py)")
    c['source'] = src
    nb['metadata'].setdefault(META, {})['commit'] = commit

def notebook_hash(nb:dict)->str:
    "Hash of a notebook's code cells."
    return hashlib.sha256('\n\x00\n'.join(s.strip() for s in code_cells(nb)).encode()).hexdigest()[:16]

def skipped(src:str)->bool: return bool(re.search(r'^#\|\s*eval:\s*false', src, re.M))

def run(path:Path, timeout:int=1800, commit:str|None=None)->dict:
    "Execute `path` in place (cwd: its folder), store widget state, the code hashes and `commit` (default HEAD), clean it."
    commit = commit or head_commit()
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
    stamp_commit(nb, commit)
    nb.metadata[META] = dict(code_hash=notebook_hash(nb), library_hash=library_hash(), cpu_seconds=secs, plots=plots, commit=commit)
    from nbdev.clean import clean_nb
    clean_nb(nb, allowed_metadata_keys=[META])
    nbformat.write(nb, path)
    return dict(notebook=path.name, seconds=secs, plots=plots)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help='notebooks to run (default: every notebook in nbs/)')
    args = ap.parse_args()
    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT/'nbs').glob('*.ipynb'))
    commit = head_commit()  # before any run: refused while the library has uncommitted changes
    # OMP_NUM_THREADS is left unset: the comparisons' child processes then share the cores (compare.child_env);
    # set to 2, two children ran four threads on two cores and a retrieval comparison took several times longer.
    for p in paths:
        r = run(p, commit=commit)
        print(f"{r['notebook']:28} {r['seconds']:7.1f} s  {r['plots']:3} plots", flush=True)

if __name__ == '__main__': main()
