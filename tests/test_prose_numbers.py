"""Every figure a page's prose quotes is one its saved outputs hold.

The rule, for each notebook in `nbs/`: in every markdown cell, every number written with a decimal point (`70.1`) or a
per cent sign (`97%`) must appear, rounded to the decimals the prose gives, among the numbers of that notebook's saved
outputs (stream, `text/plain`, `text/markdown`). A page that types a result by hand, or quotes one its cells no longer
print, fails; the fix is a cell that prints the figure (or `Markdown(...)` built from it), or prose without the number.

Not results, so left out before matching:
- code spans, fenced code, LaTeX (`$...$`, `$$...$$`), link targets and HTML tags;
- section numbers (`§2.2`, `RECIPES.md §1.10`, `Table 1.5`), version numbers (`0.2.1`, `≥ 0.15`, `PEFT 0.21`,
  `Python 3.10`), arXiv ids (`1508.07909`);
- settings written as settings: a number right after `=`, `×` or `x` (`ρ = 0.2`, `lr = 0.1`), or right after the name
  of a knob it sets (rate, lr, decay, ratio, eps, momentum, temperature, scale, dropout, threshold...);
- published figures: a sentence that names where it comes from (`paper`, `reported`, `published`, `authors`, `et al.`)
  quotes others' numbers, which no cell here computes;
- the entries of `ALLOW` below, each with its reason.
"""
import json, re
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'

# (notebook, the number as written) -> why it is not a result of the page
ALLOW = {
}

NUM = re.compile(r'(?<![\w.\-/§])(\d[\d,]*(?:\.\d+)?)(\s?%)?(?![\w.]\d)')
KNOBS = r'(?:rate|rates|lr|LR|decay|ratio|eps|momentum|temperature|scale|dropout|threshold|margin|beta|alpha|α|β|ρ|λ|τ|std|mean)'
SETTING = re.compile(r'(?:[=×x≥≤<>~]|' + KNOBS + r'(?:\s+of)?)\s*$')
SOURCE = re.compile(r'\b(?:paper|papers|reported|reports|published|authors|et al)\b', re.I)
VERSION = re.compile(r'(?:\b(?:v|Python|PEFT|torch|PyTorch|open_clip|nbdev|numpy|Quarto)\s*)$')

def strip_markup(md:str)->str:
    "The prose of a markdown cell: code, maths, link targets and tags removed."
    for pat in (r'```.*?```', r'\$\$.*?\$\$', r'\$[^$\n]+\$', r'`[^`\n]*`', r'<[^>]+>'):
        md = re.sub(pat, ' ', md, flags=re.S)
    return re.sub(r'\]\([^)]*\)', '] ', md)

def sentences(text:str)->list:
    "The prose split at sentence ends (a full stop, colon or semicolon before a space and a capital, or a blank line)."
    return re.split(r'(?<=[.;:!?])\s+(?=[A-Z(*])|\n\s*\n|\n\s*[-|]', text)

def prose_numbers(md:str)->list:
    "The numbers with a decimal point or a per cent sign in a markdown cell's prose, less sections, versions, settings, citations."
    out = []
    for s in sentences(strip_markup(md)):
        if SOURCE.search(s): continue
        for m in NUM.finditer(s):
            num, pct = m.group(1), m.group(2)
            if '.' not in num and not pct: continue
            before = s[:m.start()]
            if re.search(r'(?:§|Table|Figure|Fig\.)\s*[\d.,\s§]*$', before) or re.fullmatch(r'\d{4}\.\d{4,5}', num): continue
            if VERSION.search(before) or SETTING.search(before): continue
            out.append(num + ('%' if pct else ''))
    return out

def output_numbers(nb:dict)->list:
    "Every number in a notebook's saved outputs (stream, text/plain, text/markdown)."
    parts = []
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if 'text' in o: parts.append(''.join(o['text']))
            for k in ('text/plain', 'text/markdown'):
                if k in o.get('data', {}): parts.append(''.join(o['data'][k]))
    return [float(x.replace(',', '')) for x in re.findall(r'\d[\d,]*(?:\.\d+)?', '\n'.join(parts)) if x.replace(',', '').replace('.', '', 1).isdigit()]

def held(number:str, values:list)->bool:
    "Whether `number` (as the prose writes it) is one of `values` rounded to its decimals."
    n = number.rstrip('%').replace(',', '')
    d = len(n.split('.')[1]) if '.' in n else 0
    return any(abs(round(v, d) - float(n)) < 1e-9 for v in values)

def unheld(path:Path)->list:
    "(cell, number) for every number the notebook's prose quotes and its saved outputs do not hold."
    nb = json.loads(path.read_text())
    values = output_numbers(nb)
    return [(i, n) for i, c in enumerate(nb['cells']) if c['cell_type'] == 'markdown'
            for n in prose_numbers(''.join(c['source'])) if (path.name, n) not in ALLOW and not held(n, values)]

def test_rule():
    "The rule on made-up prose."
    md = ("Full fine-tuning reaches 70.1% (`lr 0.5%`), 97% of it; at lr 0.002 and ρ = 0.2, "
          "[see](x/1.5.html) RECIPES.md §1.10, PEFT 0.21, arXiv 1508.07909. The paper reports 62.0%.")
    assert prose_numbers(md) == ['70.1%', '97%']
    assert held('70.1%', [70.13]) and not held('70.1%', [70.2]) and held('1,024.5', [1024.5])

def test_prose_numbers_are_in_outputs():
    "No page quotes a figure its saved outputs do not hold."
    bad = {p.name: unheld(p) for p in sorted(NBS.glob('*.ipynb'))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, '\n'.join(f"{k}: " + ', '.join(f"cell {i}: {n}" for i, n in v) for k, v in bad.items())
