__version__ = "0.1.0"

_LAZY = {'get_strategy': 'strategy', 'list_strategies': 'strategy', 'register_strategy': 'strategy', 'Strategy': 'strategy',
         'load_clip': 'models', 'count_params': 'core', 'seed_everything': 'core',
         'get_dataset': 'benchmarks', 'list_datasets': 'benchmarks',  # benchmarks registers the field's datasets
         'trainable_report': 'widgets', 'trainable_widget': 'widgets'}

def __getattr__(name):
    "Import the public entry points on first use, so `import clip_strategies` stays light."
    if name not in _LAZY: raise AttributeError(f"module 'clip_strategies' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f'clip_strategies.{_LAZY[name]}'), name)

__all__ = list(_LAZY)
