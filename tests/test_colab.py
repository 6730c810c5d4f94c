"""Every notebook on Colab: no cell reads a file that `pip install git+...` does not bring, the data the notebooks read is
installed with the package, and every notebook (the home page too) installs the exact commit its saved outputs came from."""
import json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from run_nbs import INSTALL_CELL, COMMIT_LINE, META, repo_url, install_cells, stamp_commit, head_commit, library_hash_at, git

NBS = sorted((ROOT/'nbs').glob('*.ipynb'))
# a string literal that starts in the repository around the package: ../x, tools/, tests/, bench/, nbs/, results/...
REPO_RELATIVE = re.compile(r"""['"](\.\./|\./)?(tools|tests|bench|nbs|results|clip_strategies|\.ci|\.github)/|['"]\.\./|"""
                           r"""Path\(\s*['"](tools|tests|bench|nbs|results)['"]\s*\)""")

def code_cells(path):
    return [(i, ''.join(c['source'])) for i, c in enumerate(json.loads(path.read_text())['cells']) if c['cell_type'] == 'code']

def repo_relative_reads(path)->list:
    "(cell, line) of every code line in `path` that names a repository-relative path."
    return [(i, l.strip()) for i, s in code_cells(path) for l in s.splitlines() if REPO_RELATIVE.search(l)]

def test_the_scan_finds_repo_relative_paths():
    for line in ("subprocess.run([sys.executable, '../tools/make_digits.py', d])", "load_results('results/mini_compare.json')",
                 "Path('results').mkdir()", "Path('../clip_strategies/configs')", 'open("tests/test_prefix.py")'):
        assert REPO_RELATIVE.search(line), line
    for line in ("results_file('mini_compare')", "Path(tempfile.mkdtemp())/'digits'", "'DATASET.ROOT', 'data'", "f'{name}/results.json'"):
        assert not REPO_RELATIVE.search(line), line

def test_no_notebook_reads_a_repo_relative_file():
    bad = {p.name: r for p in NBS if (r := repo_relative_reads(p))}
    assert bad == {}, f"cells that read files `pip install` does not bring (ship them in clip_strategies/assets): {bad}"

def test_the_data_notebooks_read_is_installed_with_the_package(tmp_path):
    "What setuptools installs (build_py: the modules and package_data) holds every result table the notebooks name."
    named = {m for p in NBS for _, s in code_cells(p) if not s.startswith('#| hide')
             for m in re.findall(r"results_file\('(\w+)'\)", s)}  # the readers (hidden test cells try wrong names)
    if any('protocol_tables()' in s for p in NBS for _, s in code_cells(p)):  # choose.protocol_tables reads one table per protocol
        from clip_strategies.compare import PROTOCOLS
        named |= {f'mini_protocol_{p}' for p in PROTOCOLS}
    assert named >= {'mini_compare', 'digits_compare', 'mini_base_to_new', 'mini_retrieval'}, named
    out = subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '-d', str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pkg = tmp_path/'clip_strategies'
    assert sorted(p.stem for p in (pkg/'assets'/'results').glob('*.json')) == sorted(named)
    assert (pkg/'assets'/'mini.safetensors').is_file() and sorted(p.name for p in (pkg/'configs').glob('*.yaml')) == ['mini.yaml', 'vit_b16.yaml']
    assert (pkg/'mini.py').is_file() and 'def make_digits' in (pkg/'mini.py').read_text()  # the digits maker ships too

def test_every_notebook_has_the_install_cell():
    "One Colab install cell per notebook, the home page included, installing settings.ini's repository at a commit."
    for p in NBS:
        nb = json.loads(p.read_text())
        cells = install_cells(nb)
        assert cells == [2], f"{p.name}: the Colab install cell must be cell 2, after the title and the badge; found {cells}"
        src = ''.join(nb['cells'][2]['source'])
        commit = COMMIT_LINE.search(src)
        assert commit and src == INSTALL_CELL.format(commit=commit[1], url=repo_url()), f"{p.name}: not run_nbs.INSTALL_CELL:\n{src}"
        assert 'colab-badge' in ''.join(nb['cells'][1]['source']) and f'blob/main/nbs/{p.name}' in ''.join(nb['cells'][1]['source'])

def test_install_cell_names_the_commit_of_the_saved_outputs():
    "The cell's commit is the one run_nbs recorded, and the library at that commit is the library the outputs came from."
    stale = []
    for p in NBS:
        nb = json.loads(p.read_text())
        commit, meta = COMMIT_LINE.search(''.join(nb['cells'][2]['source']))[1], nb['metadata'].get(META, {})
        if not re.fullmatch('[0-9a-f]{40}', commit) or meta.get('commit') != commit: stale.append(p.name); continue
        try: at = library_hash_at(commit)
        except subprocess.CalledProcessError: pytest.skip(f'commit {commit} is not in this clone (a shallow checkout?)')
        assert at == meta['library_hash'], f"{p.name}: the library at {commit[:10]} is not the one its outputs came from"
    assert stale == [], f"install cells that name no commit of their saved outputs (run `python tools/run_nbs.py` on a committed library): {stale}"

def test_run_nbs_stamps_the_commit_into_cell_and_metadata():
    nb = {'metadata': {}, 'cells': [{'cell_type': 'markdown', 'source': 'x'},
                                    {'cell_type': 'code', 'source': INSTALL_CELL.format(commit='main', url=repo_url())}]}
    stamp_commit(nb, 'a' * 40)
    assert COMMIT_LINE.search(nb['cells'][1]['source'])[1] == 'a' * 40 and nb['metadata'][META]['commit'] == 'a' * 40
    with pytest.raises(SystemExit, match='exactly one Colab install cell'): stamp_commit({'metadata': {}, 'cells': []}, 'a' * 40)

def test_run_nbs_refuses_an_uncommitted_library(tmp_path):
    git('init', '-q', root=tmp_path); (tmp_path/'clip_strategies').mkdir(); (tmp_path/'clip_strategies'/'a.py').write_text('x = 1\n')
    git('-c', 'user.name=t', '-c', 'user.email=t@t', 'add', '-A', root=tmp_path)
    git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one', root=tmp_path)
    commit = head_commit(tmp_path)
    assert re.fullmatch('[0-9a-f]{40}', commit) and library_hash_at(commit, tmp_path)
    (tmp_path/'nbs').mkdir(); (tmp_path/'nbs'/'n.ipynb').write_text('{}')  # notebooks may differ: pip does not bring them
    assert head_commit(tmp_path) == commit
    (tmp_path/'clip_strategies'/'a.py').write_text('x = 2\n')
    with pytest.raises(SystemExit, match='(?s)commit the library first.*clip_strategies/a.py'): head_commit(tmp_path)

RUNS_A_MODEL = re.compile(r'\b(load_clip|protocol_run|fit_memes|train_main|paper_run)\(')

def test_real_clip_cells_skip_through_one_check():
    "Every `#| gpu` cell that runs a real CLIP goes through `real_clip_skip`/`paper_run` (GPU, weights, dataset; random weights)."
    bad = [(p.name, i) for p in NBS for i, s in code_cells(p) if s.startswith('#| gpu') and RUNS_A_MODEL.search(s)
           and not re.search(r'\b(real_clip_skip|paper_run)\(', s)]
    assert bad == [], bad
    cells = [s for p in NBS for _, s in code_cells(p) if s.startswith('#| gpu') and RUNS_A_MODEL.search(s)]
    assert len(cells) >= 20 and not any('real_clip_unavailable(' in s for s in cells)
