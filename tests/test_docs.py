"""The docs: the pre-processing nbdev runs before Quarto keeps working on every notebook and keeps what the pages show
(outputs, plots, widget state, the Colab badge), and the strategy pages, rendered to HTML, show their results in a
headless browser."""
import functools, http.server, json, re, shutil, subprocess, sys, threading
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT/'.ci'/'cache'/'js'  # offline copies of the widget manager the pages load (.ci/run fetches them)
STRATEGY_PAGES = sorted(p.name for p in (ROOT/'nbs').glob('[235][0-9]_*.ipynb'))
BADGE = 'colab.research.google.com/github/clip-strategies/clip_strategies/blob/main/nbs/{}'

@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "A copy of the repository after `nbdev.serve.proc_nbs()` (what `nbdev_docs` hands to Quarto)."
    work = tmp_path_factory.mktemp('docs')/'repo'
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns('.venv', '.git', '_proc', '_docs', '__pycache__', 'output', 'cache'))
    res = subprocess.run([sys.executable, '-c', "import nbdev.serve; nbdev.serve.proc_nbs(n_workers=0)"], cwd=work,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return work/'_proc'

def test_proc_nbs_processes_every_notebook(processed):
    nbs = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
    assert nbs and sorted(p.name for p in processed.glob('*.ipynb')) == nbs
    assert (processed/'_quarto.yml').is_file()

def test_processed_pages_keep_badge_plots_and_widget_state(processed):
    for p in sorted(processed.glob('*.ipynb')):
        nb = json.loads(p.read_text())
        md = ''.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
        assert BADGE.format(p.name) in md, f'{p.name} lost its Colab badge'
        outs = [o for c in nb['cells'] for o in c.get('outputs', [])]
        if any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outs):
            assert nb['metadata'].get('widgets'), f'{p.name} shows a widget but holds no widget state'
        if p.name in STRATEGY_PAGES: assert any('image/png' in o.get('data', {}) for o in outs), f'{p.name} has no plot'

def test_every_notebook_has_a_colab_badge():
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')): assert BADGE.format(nb.name) in nb.read_text(), nb.name

def test_sidebar_lists_every_notebook():
    sidebar = (ROOT/'nbs'/'sidebar.yml').read_text()
    assert [nb.name for nb in (ROOT/'nbs').glob('*.ipynb') if nb.name not in sidebar] == []

def test_readme_links_every_notebook():
    readme = (ROOT/'README.md').read_text()
    assert [nb.name for nb in sorted((ROOT/'nbs').glob('*.ipynb')) if nb.name != 'index.ipynb' and f'(nbs/{nb.name})' not in readme] == []

def test_every_strategy_page_links_to_choose_a_strategy():
    assert [p for p in STRATEGY_PAGES if '](44_choose.ipynb)' not in (ROOT/'nbs'/p).read_text()] == []

def _serve(folder:Path)->tuple:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_address[1]}'

def _dom(url:str, profile:Path)->str:
    "The page's DOM after its scripts ran, from headless Chromium."
    args = [shutil.which('chromium'), '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
            '--virtual-time-budget=15000', '--dump-dom', url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120).stdout

def test_strategy_pages_show_their_results_in_a_browser(processed, tmp_path):
    if shutil.which('chromium') is None: pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    js = {'embed-amd.js': CACHE/'html-manager'/'package'/'dist'/'embed-amd.js', 'require.js': CACHE/'requirejs'/'package'/'require.js'}
    if not all(p.is_file() for p in js.values()): pytest.skip(f"no offline copy of the widget manager in {CACHE} (.ci/run fetches it with npm pack)")
    site = tmp_path/'site'
    shutil.copytree(js['embed-amd.js'].parent, site)
    shutil.copy(js['require.js'], site/'require.js')
    res = subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'html', '--output-dir', str(site),
                          *[str(processed/p) for p in STRATEGY_PAGES]], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    srv, base = _serve(site)
    try:
        for page in STRATEGY_PAGES:
            html = site/page.replace('.ipynb', '.html')
            text = re.sub(r'https://unpkg.com/@jupyter-widgets/html-manager@[^/]*/dist/embed-amd.js', 'embed-amd.js', html.read_text())
            html.write_text(re.sub(r'https://cdnjs.cloudflare.com/ajax/libs/require.js/[^"]*', 'require.js', text))
            dom = _dom(f'{base}/{html.name}', tmp_path/f'profile-{page}')
            assert 'Open In Colab' in dom, f'{page}: no Colab badge'
            assert dom.count('data:image/png') >= 1, f'{page}: no plot on the page'
            assert 'Traceback' not in dom, f'{page}: a traceback on the page'
            assert re.search(r'trainable: [\d,]+ / [\d,]+ parameters', dom), f'{page}: the trainable widget area is empty'
    finally: srv.shutdown()
