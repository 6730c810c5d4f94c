"The docs pre-processing (what `nbdev_docs` runs before Quarto) must keep working on every notebook."
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_proc_nbs_processes_every_notebook(tmp_path):
    "nbdev.serve.proc_nbs() turns each notebook into a processed page without error."
    work = tmp_path/'repo'
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns('.venv', '.git', '_proc', '_docs', '__pycache__', 'output'))
    code = "import nbdev.serve, sys; nbdev.serve.proc_nbs(n_workers=0)"
    res = subprocess.run([sys.executable, '-c', code], cwd=work, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    nbs = sorted(p.name for p in (work/'nbs').glob('*.ipynb'))
    done = sorted(p.name for p in (work/'_proc').glob('*.ipynb'))
    assert nbs and done == nbs, (nbs, done)
    assert (work/'_proc'/'_quarto.yml').is_file()

def test_every_notebook_has_a_colab_badge():
    "Each notebook opens in Colab from its own badge."
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        assert f"colab.research.google.com/github/clip-strategies/clip_strategies/blob/main/nbs/{nb.name}" in nb.read_text(), nb.name

def test_sidebar_lists_every_notebook():
    "The docs sidebar links every notebook."
    sidebar = (ROOT/'nbs'/'sidebar.yml').read_text()
    missing = [nb.name for nb in (ROOT/'nbs').glob('*.ipynb') if nb.name not in sidebar]
    assert not missing, missing
