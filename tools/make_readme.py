"""Write README.md from nbs/index.ipynb, as `nbdev_readme` would without Quarto: the markdown cells as they are, code
cells as Python blocks, links to notebooks pointing into nbs/, and their short text outputs (widgets and plots are left to the docs site).

    python tools/make_readme.py            # rewrite README.md
    python tools/make_readme.py --check    # exit 1 if README.md is not what index.ipynb gives

`tests/test_readme.py` runs the check, so the README and the home page never drift apart."""
import argparse, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_OUTPUT_LINES = 12

def _text(x)->str: return ''.join(x) if isinstance(x, list) else x

def _output_text(cell:dict)->str|None:
    "The cell's short plain-text result, if it has one and no widget or image."
    texts = []
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if any(k.startswith('application/vnd.jupyter.widget') or k.startswith('image/') for k in data): return None
        if o.get('output_type') == 'stream' and o.get('name') == 'stdout': texts.append(_text(o['text']))
        elif 'text/plain' in data: texts.append(_text(data['text/plain']))
    text = ''.join(texts).strip('\n')
    return text if text and len(text.splitlines()) <= MAX_OUTPUT_LINES else None

def _directive(line:str)->bool: return line.startswith('#|')

def render(nb:dict)->str:
    "README text of the index notebook."
    parts = []
    for cell in nb['cells']:
        src = _text(cell['source']).strip('\n')
        if cell['cell_type'] == 'markdown': parts.append(re.sub(r'\]\((\w+\.ipynb)\)', r'](nbs/\1)', src))  # links from the repo root
        elif cell['cell_type'] == 'code':
            lines = src.splitlines()
            if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
            code = '\n'.join(l for l in lines if not _directive(l)).strip('\n')
            if code: parts.append(f'```python\n{code}\n```')
            out = _output_text(cell)
            if out: parts.append(f'```\n{out}\n```')
    return '\n\n'.join(p for p in parts if p) + '\n'

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='compare instead of writing')
    a = ap.parse_args()
    text = render(json.loads((ROOT/'nbs'/'index.ipynb').read_text()))
    readme = ROOT/'README.md'
    if a.check:
        if readme.read_text() != text: sys.exit('README.md is not in step with nbs/index.ipynb: run `python tools/make_readme.py`')
        return
    readme.write_text(text)

if __name__ == '__main__': main()
