"The README is the home page (nbs/index.ipynb) in Markdown, and the command it gives for the tests is the one CI runs."
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from make_readme import render

def test_readme_is_in_step_with_the_index_notebook():
    expected = render(json.loads((ROOT/'nbs'/'index.ipynb').read_text()))
    assert (ROOT/'README.md').read_text() == expected, 'README.md is not in step with nbs/index.ipynb: run `python tools/make_readme.py`'

def test_ci_runs_the_readme_test_command():
    command = re.search(r'```sh\n(pip install -e "\.\[dev\]".*)\n```', (ROOT/'README.md').read_text()).group(1)
    assert command.split('&& ', 1)[1] in (ROOT/'.ci'/'run').read_text()
