"Every notebook is saved with the outputs of a run of its current code (see tools/run_nbs.py)."
import json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from run_nbs import notebook_hash, library_hash, META

NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_saved_outputs_come_from_the_current_code(path):
    nb = json.loads(path.read_text())
    outputs = sum(len(c.get('outputs', [])) for c in nb['cells'] if c['cell_type'] == 'code')
    assert outputs > 0, f"{path.name} has no saved outputs: run `python tools/run_nbs.py nbs/{path.name}`"
    meta = nb['metadata'].get(META)
    assert meta, f"{path.name} was not saved by tools/run_nbs.py: run `python tools/run_nbs.py nbs/{path.name}`"
    assert meta['code_hash'] == notebook_hash(nb), f"{path.name}: its code changed since its outputs were saved: run `python tools/run_nbs.py nbs/{path.name}`"
    assert meta['library_hash'] == library_hash(), f"{path.name}: the library changed since its outputs were saved: run `python tools/run_nbs.py`"

def test_saved_notebooks_hold_no_error_outputs():
    bad = [f'{p.name}: {o.get("ename")}' for p in NOTEBOOKS for c in json.loads(p.read_text())['cells']
           for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert bad == [], bad
