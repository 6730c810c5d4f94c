"""The house: floors that only look down, no import cycles (imports inside functions count), strategies that never import
each other, a registry that names only modules that exist, and a config that loads without training or plotting code."""
import ast, importlib, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'clip_strategies'
FLOORS = {  # ARCHITECTURE's floors, as this package draws them (see nbs/00_core.ipynb)
    'core': 0, 'anatomy': 1, 'mini': 1, 'tables': 1, 'models': 2, 'data': 2, 'benchmarks': 2, 'split_files': 2.5, 'callback': 2, 'zeroshot': 3, 'optim': 3,
    'objectives': 4, 'learner': 4, 'callbacks': 4, 'checkpoint': 4, 'feature_cache': 4, 'widgets': 4, 'strategy': 5,
    'evaluate': 6.5, 'config': 7, 'cli': 7, 'compare': 8, 'protocols': 8, 'choose': 9, 'saliency': 8, 'retrieval': 9, 'memes': 8}
STRATEGY_FLOOR = 6  # the strategy modules; `evaluate` asks them, config and cli ask it

def strategy_modules():
    "The modules that hold the library's strategies (the registry's table names them; `strategy` itself holds zeroshot)."
    from clip_strategies.strategy import STRATEGY_MODULES
    return set(STRATEGY_MODULES.values()) - {'strategy'}

def modules(): return {p.stem: p for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx')}

def imports_of(path):
    "Package modules `path` imports anywhere (module level or inside functions)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: out.update([node.module] if node.module else [a.name for a in node.names])
            elif (node.module or '').startswith('clip_strategies.'): out.add(node.module.split('.')[1])
            elif node.module == 'clip_strategies': out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split('.')[1] for a in node.names if a.name.startswith('clip_strategies.'))
    return {m.split('.')[0] for m in out}

def graph():
    mods = modules()
    return {m: sorted(i for i in imports_of(p) if i in mods and i != m) for m, p in mods.items()}

def floor(m): return STRATEGY_FLOOR if m in strategy_modules() else FLOORS[m]

def test_every_module_has_a_floor():
    assert sorted(set(modules()) - strategy_modules()) == sorted(FLOORS)

def test_no_import_cycles():
    g, seen, stack = graph(), set(), []
    def visit(m):
        if m in stack: raise AssertionError('import cycle: ' + ' -> '.join(stack[stack.index(m):] + [m]))
        if m in seen: return
        stack.append(m); [visit(n) for n in g[m]]; stack.pop(); seen.add(m)
    for m in g: visit(m)

def test_lower_floors_never_import_higher_ones():
    bad = [(m, n) for m, ns in graph().items() for n in ns if floor(n) > floor(m)]
    assert bad == [], bad

def test_strategies_never_import_each_other():
    bad = [(m, n) for m, ns in graph().items() if m in strategy_modules() for n in ns if n in strategy_modules()]
    assert bad == [], bad

def test_the_registry_table_names_each_strategy_where_it_is_registered():
    "Importing each module of STRATEGY_MODULES registers exactly the names the table gives it, and nothing else registers."
    from clip_strategies.strategy import STRATEGY_MODULES, load_strategies, registered_strategies
    assert all(importlib.util.find_spec(f'clip_strategies.{m}') for m in set(STRATEGY_MODULES.values()))
    registering = sorted(m for m, p in modules().items() if '@register_strategy' in p.read_text() and m != 'strategy')
    assert registering == sorted(strategy_modules())
    load_strategies()
    where = {n: c.__module__.split('.')[-1] for n, c in registered_strategies().items()}
    assert where == STRATEGY_MODULES

def test_a_strategy_module_that_fails_to_import_is_an_error_with_its_cause(tmp_path):
    (tmp_path/'broken_for_test.py').write_text('import a_dependency_that_is_not_installed\n')
    code = ("import clip_strategies, clip_strategies.strategy as s\n"
            f"clip_strategies.__path__.append({str(tmp_path)!r}); s.STRATEGY_MODULES['broken'] = 'broken_for_test'\n"
            "try: s.get_strategy('broken')\n"
            "except s.StrategyError as e: print('ERROR', e)\n"
            "print('others', s.get_strategy('full').name)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.startswith("ERROR Strategy module clip_strategies.broken_for_test failed to import: ModuleNotFoundError: "
                                 "No module named 'a_dependency_that_is_not_installed'"), out.stdout + out.stderr
    assert 'others full' in out.stdout, out.stdout

def test_loading_a_config_imports_no_training_or_plotting_code():
    code = ("import sys; from clip_strategies.config import load_config, config_path\n"
            "cfg = load_config(config_path('mini'), {'TRAINER.NAME': 'bitfit', 'MODEL.ABS': True}); cfg.build_strategy()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('accelerate', 'matplotlib', 'ipywidgets') "
            "or m in ('clip_strategies.learner', 'clip_strategies.callbacks', 'clip_strategies.widgets', 'clip_strategies.cli')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]', out.stdout
