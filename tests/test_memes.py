"Meme classification end to end: the command line on a written synthetic folder, bad data refused, what trains."
import json, shutil
import pytest
import torch
from clip_strategies.memes import (memes_main, mini_memes, write_memes, fit_memes, MemeClassifier, FUSIONS)
from clip_strategies.models import load_clip
from clip_strategies.core import seed_everything

QUICK = ['--no-progress', '--epochs', '1', '--batch-size', '16']

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "A small synthetic meme set written in the Hateful Memes layout (3 images per shape and split)."
    return write_memes({s: mini_memes(s, per_class=3) for s in ('train', 'dev', 'test')}, tmp_path_factory.mktemp('memes'))

def test_cli_end_to_end(folder, tmp_path, capsys):
    out = tmp_path/'run'
    assert memes_main(['--data', str(folder), '--out', str(out), '--strategy', 'full', '--fusion', 'fim', *QUICK]) == 0
    m = json.loads((out/'metrics.json').read_text())
    for split in ('dev', 'test'):
        assert 0 <= m[split]['auroc'] <= 1 and 0 <= m[split]['accuracy'] <= 1 and m[split]['n'] == 2 * 3 * 8
    assert m['strategy'] == 'full' and m['fusion'] == 'fim' and m['trainable_params'] == m['total_params']
    printed = capsys.readouterr().out
    assert 'dev: AUROC' in printed and 'test: AUROC' in printed
    assert not list(out.glob('.*.tmp'))  # written atomically

@pytest.mark.parametrize('line, message', [
    ({'id': 9, 'img': 'img/train00000.png', 'label': 0}, "missing field(s) ['text']"),
    ({'id': 9, 'img': 'img/train00000.png', 'text': 'a circle', 'label': 2}, 'label 2 is not 0 or 1'),
])
def test_bad_jsonl_exits_2_naming_the_line(folder, tmp_path, capsys, line, message):
    data = shutil.copytree(folder, tmp_path/'data')
    lines = (data/'train.jsonl').read_text().splitlines()
    lines.insert(4, json.dumps(line))
    (data/'train.jsonl').write_text('\n'.join(lines) + '\n')
    assert memes_main(['--data', str(data), '--out', str(tmp_path/'out'), *QUICK]) == 2
    err = capsys.readouterr().err
    assert f"train.jsonl:5: {message}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path/'out'/'metrics.json').exists()

def test_missing_images_are_named(folder, tmp_path, capsys):
    data = shutil.copytree(folder, tmp_path/'data')
    (data/'img'/'test00002.png').unlink()
    assert memes_main(['--data', str(data), '--out', str(tmp_path/'out'), *QUICK]) == 2
    err = capsys.readouterr().err
    assert 'test.jsonl: 1 image(s) missing' in err and 'img/test00002.png' in err

def test_missing_folder_says_where_to_get_the_data(tmp_path, capsys):
    assert memes_main(['--data', str(tmp_path/'nope'), '--out', str(tmp_path/'out')]) == 2
    err = capsys.readouterr().err
    assert 'cannot be downloaded automatically' in err and 'Hateful Memes' in err and 'train.jsonl' in err

def test_unlabelled_test_is_predicted_not_scored(folder, tmp_path, capsys):
    data = shutil.copytree(folder, tmp_path/'data')
    rows = [json.loads(l) for l in (data/'test.jsonl').read_text().splitlines()]
    (data/'test.jsonl').write_text(''.join(json.dumps({k: v for k, v in r.items() if k != 'label'}) + '\n' for r in rows))
    assert memes_main(['--data', str(data), '--out', str(tmp_path/'out'), *QUICK]) == 0
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert m['test']['scored'] is False and 'no labels' in m['test']['note'] and 'auroc' in m['dev']
    assert len((tmp_path/'out'/'test_predictions.csv').read_text().splitlines()) == 1 + len(rows)
    assert 'predicted, not scored' in capsys.readouterr().out

def test_fusion_output_shapes():
    clip = load_clip('mini', device='cpu')[0]
    image, tokens = torch.randn(3, 3, 32, 32), clip.tokenizer(['a circle', 'a star', 'a moon'])
    for fusion, n in zip(FUSIONS, (8, 8, 16, 64)):
        model = MemeClassifier(clip, fusion, map_dim=8)
        out = model(image, tokens)
        assert out['logits'].shape == (3, 2) and out['p_i'].shape == out['p_t'].shape == (3, 8), fusion
        assert model.head[0].in_features == n and out['image'].shape == out['text'].shape == (3, 64)

def initial_head(fusion:str, seed:int=0)->dict:
    "The projections and head `fit_memes` starts from: same seed, same order of random draws."
    seed_everything(seed)
    return {n: p.detach().clone() for n, p in MemeClassifier(load_clip('mini', device='cpu')[0], fusion).head_parameters()}

@pytest.mark.parametrize('strategy, clip_trains', [('zeroshot', False), ('full', True)])
def test_head_trains_and_clip_only_under_a_training_strategy(strategy, clip_trains):
    start = initial_head('concat')
    untrained = fit_memes(strategy, 'concat', per_class=2, epochs=0)['model']  # the check below compares with the right start
    assert all(torch.equal(p.detach().cpu(), start[n]) for n, p in untrained.head_parameters())
    r = fit_memes(strategy, 'concat', per_class=2, epochs=1, batch_size=8)
    ref = load_clip('mini', device='cpu')[0].state_dict()
    clip_changed = any(not torch.equal(v.cpu(), ref[k]) for k, v in r['model'].clip.state_dict().items())
    assert clip_changed == clip_trains
    head = dict(r['model'].head_parameters())
    assert set(head) == set(start) and all(not torch.equal(head[n].detach().cpu(), start[n]) for n in start)

def test_a_line_that_is_not_utf8_is_named(folder, tmp_path, capsys):
    data = shutil.copytree(folder, tmp_path/'data')
    lines = (data/'train.jsonl').read_bytes().splitlines()
    lines[4] = lines[4].replace(b'"text": "', b'"text": "caf\xe9 ')  # Latin-1 'é'
    (data/'train.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    assert memes_main(['--data', str(data), '--out', str(tmp_path/'out'), *QUICK]) == 2
    err = capsys.readouterr().err
    assert 'train.jsonl:5: not UTF-8 text (byte 0xe9' in err and len(err.strip().splitlines()) == 1, err

def test_a_split_of_one_class_is_named_before_training(folder, tmp_path, capsys):
    data = shutil.copytree(folder, tmp_path/'data')
    rows = [json.loads(l) for l in (data/'dev.jsonl').read_text().splitlines()]
    (data/'dev.jsonl').write_text(''.join(json.dumps(dict(r, label=0)) + '\n' for r in rows))
    assert memes_main(['--data', str(data), '--out', str(tmp_path/'out'), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "split 'dev' (dev.jsonl)" in err and f"{len(rows)} benign and 0 hateful" in err and 'AUROC' in err, err
    assert not (tmp_path/'out').exists()

def test_cli_hateclipper_head_on_pooled_features(folder, tmp_path):
    "Hate-CLIPper's head (RECIPES.md §1.12) from the command line: pooled features, one logit, dropouts, best dev AUROC kept."
    out = tmp_path/'hc'
    assert memes_main(['--data', str(folder), '--out', str(out), '--head', 'hateclipper', '--features', 'pooled', '--map-dim', '8',
                       '--hidden', '8', '--dropout', '0.2', '0.4', '0.1', '--select', 'best', '--no-progress', '--epochs', '2']) == 0
    m = json.loads((out/'metrics.json').read_text())
    assert m['head'] == 'hateclipper' and m['settings']['features'] == 'pooled' and m['settings']['dropout'] == [0.2, 0.4, 0.1]
    assert m['checkpoint'].startswith('best dev AUROC') and 0 <= m['test']['auroc'] <= 1 and m['recipe'] == 'mini lab (ours)'

def test_real_clip_defaults_are_hateclippers():
    from clip_strategies.memes import meme_recipe
    r = meme_recipe('ViT-L-14')
    assert (r['head'], r['features'], r['map_dim'], tuple(r['dropout'])) == ('hateclipper', 'pooled', 32, (0.2, 0.4, 0.1))
    assert (r['lr'], r['weight_decay'], r['max_grad_norm'], r['batch_size'], r['epochs'], r['select']) == (1e-4, 1e-4, 0.1, 16, 20, 'best')
    assert meme_recipe('mini')['head'] == 'mlp' and meme_recipe('ViT-L-14', map_dim=64)['map_dim'] == 64

def test_alignment_losses_need_projected_features(folder, tmp_path, capsys):
    assert memes_main(['--data', str(folder), '--out', str(tmp_path/'o'), '--features', 'pooled', '--align-it', '0.5', *QUICK]) == 2
    assert "need features='projected'" in capsys.readouterr().err
