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
- 0% and 100%: bounds (none, all, a perfect score), not measurements;
- the entries of `ALLOW` below, each with its reason.

A count written in millions or thousands (`25.3 M`, `150 k`) matches the outputs' full number (25,296,896).
"""
import json, re
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'

# (notebook, the number as written) -> why it is not a result of the page
ALLOW = {
    ('02_mini.ipynb', '6.3M'): "arithmetic on the page's own figures (49,408 tokens × width 128)",
    ('02_mini.ipynb', '0.98'): "a setting (AdamW's β₂)",
    ('02_mini.ipynb', '90%'): 'a target the slow cell asserts, not a result',
    ('02_mini.ipynb', '60%'): 'a target the slow cell asserts, not a result',
    ('04_data.ipynb', '20%'): "a setting (CoOp's validation fraction)",
    ('04_data.ipynb', '0.08'): 'a setting (crop scale)',
    ('04_data.ipynb', '0.5'): 'a setting (crop scale)',
    ('04a_tables.ipynb', '0.1'): "a setting (WiSE-FT's α step)",
    ('05_zeroshot.ipynb', '90%'): "a hand-made example's input",
    ('05_zeroshot.ipynb', '58.0'): 'an illustration of rounding (29 of 50)',
    ('05_zeroshot.ipynb', '57.999998'): 'an illustration of rounding (29 of 50)',
    ('20_full.ipynb', '0.1'): 'a setting (weight decay, WiSE-FT step)',
    ('20_full.ipynb', '2.4'): "arithmetic on the sentence's own figures (4 × 150 M × 4 bytes, in GB)",
    ('21_frozen_vision.ipynb', '0.1'): "a setting (an exercise's weight decay)",
    ('21_frozen_vision.ipynb', '25.3M'): "arithmetic on the sentence's own figures (49,408 × 512)",
    ('27_differential_lr.ipynb', '0.01'): 'a setting (a rate multiplier)',
    ('27_differential_lr.ipynb', '2.6'): "others' settings (ULMFiT's layer decay)",
    ('27_differential_lr.ipynb', '0.65'): "others' settings (BEiT's layer decay)",
    ('27_differential_lr.ipynb', '0.75'): "others' settings (BEiT's layer decay)",
    ('27_differential_lr.ipynb', '0.3'): "a setting (an exercise's sweep)",
    ('27_differential_lr.ipynb', '0.03'): "a setting (an exercise's sweep)",
    ('28_abs.ipynb', '0.6'): "arithmetic (ViT-B/16's trainable weights in fp32, in GB)",
    ('30_prompt.ipynb', '0.05'): 'a setting (a learning rate)',
    ('32_adapter.ipynb', '0.999'): "a setting (AdamW's betas)",
    ('44_choose.ipynb', '0.1%'): 'a setting (a budget the reader gives)',
    ('50_tip.ipynb', '60.3%'): "a published figure (Tip-Adapter's ImageNet RN50 table)",
    ('50_tip.ipynb', '62.0%'): "a published figure (Tip-Adapter's ImageNet RN50 table)",
    ('50_tip.ipynb', '65.5%'): "a published figure (Tip-Adapter's ImageNet RN50 table)",
    ('50_tip.ipynb', '0.5'): "a hand-made example's input and an exercise's sweep",
    ('51_linear_probe.ipynb', '0.05%'): "arithmetic on the sentence's own figures (520 numbers of the mini CLIP)",
}


NUM = re.compile(r'(?<![\w.\-/§])(\d[\d,]*(?:\.\d+)?)(\s?%|\s?[Mk]\b)?(?![\w.]\d)')
KNOBS = r'(?:rate|rates|lr|LR|decay|ratio|eps|momentum|temperature|scale|dropout|threshold|margin|beta|alpha|α|β|ρ|λ|τ|std|mean)'
SETTING = re.compile(r'(?:[=×x≥≤<>~]|' + KNOBS + r'(?:\s+of)?)\s*$')
SOURCE = re.compile(r'\b(?:paper|papers|report|reported|reports|published|authors|et al)\b', re.I)
VERSION = re.compile(r'(?:\b(?:v|version|versions|Python|PEFT|YAML|torch|PyTorch|open_clip|nbdev|numpy|Quarto)\s*)$')

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
            num, unit = m.group(1), (m.group(2) or '').strip()
            if '.' not in num and unit != '%': continue
            if unit == '%' and float(num.replace(',', '')) in (0, 100): continue  # a bound (none, all, a perfect score)
            before = s[:m.start()]
            if re.search(r'(?:§|Table|Figure|Fig\.)\s*[\d.,\s§]*$', before) or re.fullmatch(r'\d{4}\.\d{4,5}', num): continue
            if VERSION.search(before) or SETTING.search(before): continue
            out.append(num + unit)
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
    "Whether `number` (as the prose writes it: `70.1`, `97%`, `25.3M`) is one of `values` rounded to its decimals."
    scale = {'M': 1e6, 'k': 1e3}.get(number[-1], 1)  # 25.3M: a count the outputs print in full (25,296,896)
    n = number.rstrip('%Mk').replace(',', '')
    d = len(n.split('.')[1]) if '.' in n else 0
    return any(abs(round(v / scale, d) - float(n)) < 1e-9 for v in values)

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
    assert prose_numbers('A perfect model reaches 100%; 25.3 M of 63.4 M train. They report AUROC 85.8.') == ['25.3M', '63.4M']
    assert held('70.1%', [70.13]) and not held('70.1%', [70.2]) and held('1,024.5', [1024.5]) and held('25.3M', [25_296_896])

def test_prose_numbers_are_in_outputs():
    "No page quotes a figure its saved outputs do not hold."
    bad = {p.name: unheld(p) for p in sorted(NBS.glob('*.ipynb'))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, '\n'.join(f"{k}: " + ', '.join(f"cell {i}: {n}" for i, n in v) for k, v in bad.items())

def test_lists_name_real_notebooks():
    "Every notebook the lists name exists (a renamed page must take its entries along)."
    names = {p.name for p in NBS.glob('*.ipynb')}
    assert {k for k, _ in ALLOW} <= names
