"""The GitHub workflows: the test workflow installs and tests exactly as .ci/run and the README say; the deploy workflow
installs the pinned nbdev 2 the same way, renders with Quarto (nbdev_docs) and publishes settings.ini's doc_path."""
import re
from configparser import ConfigParser
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
WF = ROOT/'.github'/'workflows'
INSTALL, TEST = 'pip install -e ".[dev]"', 'python tools/test_nbs.py && pytest -q tests'

def load(name): return yaml.safe_load((WF/name).read_text())
def triggers(wf): return wf.get('on', wf.get(True))  # YAML 1.1 reads the key `on` as True
def steps(wf): return [s for job in wf['jobs'].values() for s in job['steps']]
def runs(wf): return [l.strip() for s in steps(wf) for l in s.get('run', '').splitlines() if l.strip()]
def settings(): c = ConfigParser(delimiters=['=']); c.read(ROOT/'settings.ini'); return c['DEFAULT']

def test_ci_and_readme_use_the_commands_the_workflows_use():
    ci = (ROOT/'.ci'/'run').read_text().splitlines()
    assert INSTALL in ci and TEST in ci
    assert f'{INSTALL} && {TEST}' in (ROOT/'README.md').read_text()

def test_the_test_workflow_installs_and_tests_as_ci_does():
    wf = load('test.yaml')
    assert {'push', 'pull_request'} <= set(triggers(wf))
    r = runs(wf)
    assert INSTALL in r and TEST in r and r.index(INSTALL) < r.index(TEST)
    assert any(s.get('uses', '').startswith('actions/checkout') and s.get('with', {}).get('fetch-depth') == 0 for s in steps(wf))

def test_the_deploy_workflow_renders_with_quarto_and_publishes_the_docs():
    wf = load('deploy.yaml')
    assert 'main' in triggers(wf)['push']['branches'] == [settings()['branch']]
    r, uses = runs(wf), [s.get('uses', '') for s in steps(wf)]
    assert INSTALL in r and 'nbdev_docs' in r and r.index(INSTALL) < r.index('nbdev_docs')
    assert any(u.startswith('quarto-dev/quarto-actions/setup@') for u in uses)
    pub = [s for s in steps(wf) if s.get('uses', '').startswith('peaceiris/actions-gh-pages@')]
    assert len(pub) == 1 and pub[0]['with']['publish_dir'].strip('./') == settings()['doc_path']
    assert wf['permissions']['contents'] == 'write'

def test_nbdev_is_pinned_to_a_version_2():
    pins = re.findall(r'\bnbdev==(\S+)', settings()['dev_requirements'])
    assert len(pins) == 1 and pins[0].startswith('2.'), settings()['dev_requirements']
