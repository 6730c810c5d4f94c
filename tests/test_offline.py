"Weights that cannot be downloaded fail fast, with a message that says how to supply them."
import os, subprocess, sys, time

def _load(env_extra, tag='openai', model='ViT-B/16'):
    env = {**os.environ, **env_extra}
    code = (f"import sys, time\nfrom clip_strategies.models import load_clip\nt0 = time.time()\n"
            f"try: load_clip({model!r}, {tag!r}, device='cpu')\n"
            f"finally: print('SECONDS', round(time.time() - t0, 2), file=sys.stderr)")
    res = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    return res, float(res.stderr.split('SECONDS ')[-1].split()[0])  # the failure's own time, not the torch import's

def test_offline_env_fails_within_5_seconds(tmp_path):
    res, secs = _load({'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path), 'XDG_CACHE_HOME': str(tmp_path)})
    assert res.returncode != 0
    assert 'WeightsUnavailableError' in res.stderr and "'ViT-B-16' with tag 'openai'" in res.stderr
    assert 'local file' in res.stderr
    assert secs < 5, secs

def test_unreachable_hub_fails_fast_without_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    env.update({'HF_HOME': str(tmp_path), 'XDG_CACHE_HOME': str(tmp_path), 'HF_ENDPOINT': 'https://127.0.0.1:9'})
    code = ("import time; from clip_strategies.models import load_clip, WeightsUnavailableError\n"
            "t0 = time.time()\n"
            "try: load_clip('ViT-B-32', 'laion2b_s34b_b79k', device='cpu')\n"
            "except WeightsUnavailableError as e: print('FAILED', round(time.time()-t0, 2), e)")
    res = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith('FAILED'), res.stdout + res.stderr[-2000:]
    assert float(res.stdout.split()[1]) < 5
