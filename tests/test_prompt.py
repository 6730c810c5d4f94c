"""Prompt learning across modules: CoOp's recipe through the command line, its learned file, retrieval refused,
combinations with LoRA and CLIP-Adapter, differential rates over CoOp."""
import copy, json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import clip_strategies.prompt  # registers coop, cocoop, kgcoop, vpt (also listed in strategy.STRATEGY_MODULES)
from clip_strategies.prompt import CoOp, prompt_embedding
from clip_strategies.cli import train_main
from clip_strategies.core import read_safetensors
from clip_strategies.models import load_clip
from clip_strategies.strategy import get_strategy, check_strategy, load_learned

pytestmark = pytest.mark.usefixtures('one_thread')  # one torch thread for this module's tests (conftest), restored after
SMALL = ['--no-progress', 'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[]']  # 16 images: one step per epoch

@pytest.fixture(scope='module')
def mini():
    return load_clip('mini', device='cpu')[0]

@pytest.fixture(scope='module')
def coop_run(tmp_path_factory):
    "A CoOp run from the command line with no OPTIM key: CoOp's recipe sets them."
    out = tmp_path_factory.mktemp('coop')/'run'
    assert train_main(['--config', 'mini', *SMALL, 'TRAINER.NAME', 'coop', 'OUTPUT_DIR', str(out)]) == 0
    return out

def outputs(model, texts):
    "Image and text features of a fixed batch (placeholder prompts and a caption), eval mode."
    g = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad(): return torch.cat(model(torch.randn(2, 3, 32, 32, generator=g), model.tokenizer(texts))[:2])

def test_coop_run_records_its_recipe(coop_run):
    cfg = yaml.safe_load((coop_run/'config.yaml').read_text())
    optim = {f'OPTIM.{k}': v for k, v in cfg['OPTIM'].items()}
    want = {k: v for k, v in CoOp.recipe.items() if k.startswith('OPTIM.')}
    assert {k: optim[k] for k in want} == want
    assert cfg['DATALOADER']['TRAIN_X']['BATCH_SIZE'] == CoOp.recipe['DATALOADER.TRAIN_X.BATCH_SIZE']
    m = json.loads((coop_run/'metrics.json').read_text())
    assert m['strategy'] == 'coop' and m['epochs'] == CoOp.recipe['OPTIM.MAX_EPOCH'] and m['trainable_params'] == 16 * 128
    assert len(m['history']) == m['epochs']

def test_learned_file_loads_onto_a_fresh_model(coop_run, mini):
    tensors, _ = read_safetensors(coop_run/'learned.safetensors')
    assert list(tensors) == ['token_embedding.ctx']  # the context alone, nothing of the backbone
    fresh = load_clip('mini', device='cpu')[0]
    strategy = load_learned(fresh, coop_run/'learned.safetensors', 'mini')
    trained = copy.deepcopy(mini)
    get_strategy('coop').apply(trained)
    trained.load_state_dict(load_file(str(coop_run/'model.safetensors')))  # the whole trained model, as the run wrote it
    texts = [strategy.prompt_templates(fresh, [])[0].format(c) for c in ('circle', 'star')] + ['a red circle']
    torch.testing.assert_close(outputs(fresh, texts), outputs(trained, texts), rtol=0, atol=1e-6)
    init = get_strategy('coop').apply(copy.deepcopy(mini))
    assert not torch.allclose(prompt_embedding(fresh).ctx, prompt_embedding(init).ctx, atol=1e-4)  # it trained

@pytest.mark.parametrize('name', ['coop', 'cocoop', 'kgcoop'])
def test_retrieval_is_refused_naming_strategy_and_task(tmp_path, capsys, name):
    out = tmp_path/'ret'
    assert train_main(['--config', 'mini', '--no-progress', 'TRAINER.NAME', name, 'DATASET.NAME', 'mini_captions',
                       'OUTPUT_DIR', str(out)]) == 2
    err = capsys.readouterr().err
    assert f"Strategy '{name}' supports classification only, not retrieval" in err, err
    assert not (out/'metrics.json').exists() and not (out/'checkpoints').exists()

def test_lora_with_coop_trains_from_yaml(tmp_path, mini):
    cfg = tmp_path/'lora_coop.yaml'
    cfg.write_text("TRAINER:\n  NAME: [lora, coop]\nOPTIM:\n  MAX_EPOCH: 2\n")
    out = tmp_path/'run'
    assert train_main(['--config', str(cfg), *SMALL, 'OUTPUT_DIR', str(out)]) == 0
    lora = get_strategy('lora')
    lora_names = lora.learned_names(lora.apply(copy.deepcopy(mini)))
    tensors, _ = read_safetensors(out/'learned.safetensors')
    assert sorted(tensors) == sorted(lora_names + ['token_embedding.ctx'])
    m = json.loads((out/'metrics.json').read_text())
    assert m['trainable_params'] == sum(t.numel() for t in tensors.values())
    assert tensors['token_embedding.ctx'].shape == (16, 128)
    assert any(t.abs().max() > 0 for n, t in tensors.items() if 'lora_B' in n)  # zero-initialised factors moved

def test_vpt_with_clip_adapter_keeps_output_shapes(mini):
    model, combo = copy.deepcopy(mini), get_strategy(['vpt', 'clip_adapter'])
    names = check_strategy(combo, model)
    assert names[0] == 'visual.transformer.prompts' and all('clip_adapter' in n for n in names[1:]) and len(names) == 3
    img, tok = torch.randn(3, 3, 32, 32), model.tokenizer(['a red circle', 'a star'])
    model.eval(); mini.eval()
    with torch.no_grad():
        got, ref = model(img, tok), mini(img, tok)
        assert [t.shape for t in got[:2]] == [t.shape for t in ref[:2]]
        assert model.encode_image(img).shape == mini.encode_image(img).shape
        assert not torch.allclose(got[0], ref[0], atol=1e-4)  # the prompts act on the image features
        torch.testing.assert_close(got[1], ref[1])  # the text side is untouched

def test_differential_lr_over_coop(tmp_path, mini):
    s = get_strategy('differential_lr', base='coop', base_options={'n_ctx': 4}, new_mult=5.0)
    assert check_strategy(s, copy.deepcopy(mini)) == ['token_embedding.ctx']
    out = tmp_path/'run'
    assert train_main(['--config', 'mini', *SMALL, 'TRAINER.NAME', 'differential_lr', 'TRAINER.DIFFERENTIAL_LR.BASE', 'coop',
                       'TRAINER.DIFFERENTIAL_LR.BASE_OPTIONS', '{n_ctx: 4}', 'TRAINER.DIFFERENTIAL_LR.NEW_MULT', '5.0',
                       'OPTIM.MAX_EPOCH', '2', 'OUTPUT_DIR', str(out)]) == 0
    m = json.loads((out/'metrics.json').read_text())
    assert m['strategy'] == 'differential_lr' and m['trainable_params'] == 4 * 128
    tensors, meta = read_safetensors(out/'learned.safetensors')
    assert list(tensors) == ['token_embedding.ctx']
    fresh = load_clip('mini', device='cpu')[0]
    loaded = load_learned(fresh, out/'learned.safetensors', 'mini')
    assert loaded.prompt_templates(fresh, []) == ['X X X X {}.']  # the base's placeholder template reaches the objective

def test_kgcoop_reads_its_own_template_for_the_dataset(tmp_path):
    "A training set named like one of the field's datasets gets KgCoOp's template for it (its code's table); others 'a photo of a {}.'."
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tools'))
    from make_digits import make_digits
    from clip_strategies.cli import train
    from clip_strategies.cli import resolve_config
    from clip_strategies.config import load_config
    data = make_digits(tmp_path/'dtd')  # an image folder named 'dtd': the run's dataset name
    cfg = load_config(resolve_config('mini'), {'TRAINER.NAME': 'kgcoop', 'DATASET.NAME': 'imagefolder', 'DATASET.ROOT': str(data),
                                               'DATASET.NUM_SHOTS': 1, 'DATASET.ALSO_TEST': [], 'OPTIM.MAX_EPOCH': 1,
                                               'OUTPUT_DIR': str(tmp_path/'run')})
    res = train(cfg, progress=False, log=lambda *a: None)
    prompts = res['learner'].objective.hand_prompts
    assert len(prompts) == 10 and 'a photo of a zero, a type of texture.' in prompts, prompts
