"""Retrieval through the command lines: a caption file with a missing image stops the run before it starts; DATASET.TASK
refuses a dataset of the other task; gradient accumulation of the contrastive loss ends where one big batch ends; the
comparison ranks by recall and refuses a strategy that cannot train for retrieval. Caption files as a careless user
writes them: captions longer than the context are counted in one note; a val or test split too small for recall@10 is
refused before anything trains; a CSV without its header, or a line that is not UTF-8, is named with the right line."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from clip_strategies.cli import train_main
from clip_strategies.compare import compare_main
from clip_strategies.core import read_safetensors
from clip_strategies.mini import mini_captions

QUICK = ['--config', 'mini', '--no-progress', 'DATASET.ALSO_TEST', '[]']

LONG = ' and then ' + ' '.join(['a big red circle beside a small blue square'] * 12)  # far past 77 tokens

def caption_folder(root:Path, sizes:dict, long:dict|None=None)->Path:
    "train/val/test.jsonl with the first pairs of each mini_captions split, images beside them; `long[split]` made too long."
    (root/'img').mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        ds, lines = mini_captions(split), []
        for i in range(n):
            Image.fromarray(ds.images[i]).save(root/'img'/f'{split}{i}.png')
            caption = ds.captions[i] + (LONG if i < (long or {}).get(split, 0) else '')
            lines.append(json.dumps(dict(image=f'img/{split}{i}.png', caption=caption)))
        (root/f'{split}.jsonl').write_text('\n'.join(lines) + '\n')
    return root

def test_a_missing_image_is_named_and_nothing_starts(tmp_path, capsys):
    root = caption_folder(tmp_path/'caps', dict(train=8, val=10, test=10))
    (root/'train.jsonl').write_text((root/'train.jsonl').read_text() + '{"image": "img/nowhere.png", "caption": "gone"}\n')
    out = tmp_path/'run'
    assert train_main([*QUICK, 'DATASET.NAME', 'captions', 'DATASET.ROOT', str(root), 'OUTPUT_DIR', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'line 9' in err and 'nowhere.png' in err and not (out/'metrics.json').exists()

def test_dataset_task_refuses_the_other_kind_of_dataset(tmp_path, capsys):
    args = [*QUICK, 'DATASET.TASK', 'retrieval', 'OUTPUT_DIR', str(tmp_path/'run')]
    assert train_main(args) == 2
    assert "DATASET.TASK is 'retrieval' but dataset 'mini_shift' has class names" in capsys.readouterr().err
    assert train_main([*QUICK, 'DATASET.TASK', 'nonsense', 'OUTPUT_DIR', str(tmp_path/'run2')]) == 2

def test_accumulated_contrastive_batches_end_where_one_big_batch_ends(tmp_path):
    """Batch 8 accumulated 4 times is batch 32: the same loader batches, the same loss on all 32 pairs, the same weights.

    SGD, because Adam divides by the gradient's running scale: where a gradient is near zero, float rounding alone flips
    the sign of a full-size step, and the weights would differ for reasons that have nothing to do with accumulation."""
    root = caption_folder(tmp_path/'caps', dict(train=64, val=10, test=16))
    def run(name, batch, accum):
        out = tmp_path/name
        assert train_main([*QUICK, 'TRAINER.NAME', 'bitfit', 'DATASET.NAME', 'captions', 'DATASET.ROOT', str(root),
                           'DATALOADER.TRAIN_X.BATCH_SIZE', str(batch), 'TRAIN.GRAD_ACCUM_STEPS', str(accum),
                           'OPTIM.MAX_EPOCH', '2', 'OPTIM.NAME', 'sgd', 'OPTIM.LR', '0.05', 'OUTPUT_DIR', str(out)]) == 0
        return json.loads((out/'metrics.json').read_text()), read_safetensors(out/'model.safetensors')[0]
    (m_acc, w_acc), (m_big, w_big), (m_small, w_small) = run('acc', 8, 4), run('big', 32, 1), run('small', 8, 1)
    assert [h['train_loss'] for h in m_acc['history']] == pytest.approx([h['train_loss'] for h in m_big['history']], rel=1e-4)
    for k in w_big: assert torch.allclose(w_acc[k], w_big[k], atol=1e-5), k
    assert any(not torch.allclose(w_small[k], w_big[k], atol=1e-5) for k in w_big)  # without accumulation: another run

def test_comparison_on_captions_ranks_by_recall_and_refuses_classification_only_strategies(tmp_path, capsys):
    out = tmp_path/'cmp'
    args = ['--config', 'mini', '--no-progress', '--seeds', '1', '--out', str(out), 'DATASET.NAME', 'mini_captions',
            'DATASET.ALSO_TEST', '[]', 'OPTIM.MAX_EPOCH', '1']
    assert compare_main([*args, '--strategies', 'bitfit,coop']) == 2
    assert "'coop' supports classification only, not retrieval" in capsys.readouterr().err and not out.exists()
    assert compare_main([*args, '--strategies', 'zeroshot,bitfit']) == 0
    printed = capsys.readouterr().out
    assert 'On the whole training split, mean recall@1' in printed
    rows = json.loads((out/'results.json').read_text())
    assert {r['strategy'] for r in rows} == {'zeroshot', 'bitfit'} and all(r['shots'] == 16 for r in rows)  # one shots value
    z = next(r for r in rows if r['strategy'] == 'zeroshot')
    assert z['i2t_r1'] == z['i2t_r1_before'] and z['accuracy'] is None
    assert all(v == round(v, 2) for r in rows for v in (r['i2t_r1'], r['t2i_r1'], r['i2t_r5']))

CAPS = [*QUICK, 'DATASET.NAME', 'captions', 'TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '1']

def test_long_captions_are_counted_once_in_a_note(tmp_path, capsys):
    root = caption_folder(tmp_path/'caps', dict(train=16, val=10, test=12), long=dict(train=3, test=2))
    out = tmp_path/'run'
    assert train_main([*CAPS, 'DATASET.ROOT', str(root), 'OUTPUT_DIR', str(out)]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    notes = [l for l in captured.out.splitlines() if 'longer than' in l]
    assert len(notes) == 1 and notes[0].startswith('note: 5 of 38 captions (train 3, test 2)'), captured.out
    assert '77 tokens' in notes[0] and 'longer than' not in captured.err  # said once, as a note, not as a warning too

@pytest.mark.parametrize('sizes, split, n', [(dict(train=12, val=10, test=1), 'test', 1),
                                             (dict(train=12, val=4, test=10), 'val', 4)])
def test_a_split_smaller_than_recall_k_is_refused_before_training(tmp_path, capsys, sizes, split, n):
    root, out = caption_folder(tmp_path/'caps', sizes), tmp_path/'run'
    assert train_main([*CAPS, 'DATASET.ROOT', str(root), 'OUTPUT_DIR', str(out)]) == 2
    err = capsys.readouterr().err
    assert f"The {split} split" in err and f"{split}.jsonl" in err and f"has {n} image(s)" in err and 'recall@10' in err, err
    assert not out.exists()  # refused while reading the captions: nothing evaluated, trained or written

def test_a_csv_without_header_is_named_at_line_1(tmp_path, capsys):
    root = caption_folder(tmp_path/'caps', dict(train=12, val=10, test=10))
    rows = [json.loads(l) for l in (root/'train.jsonl').read_text().splitlines()]
    (root/'train.jsonl').unlink()
    (root/'train.csv').write_text(''.join(f"{r['image']},{r['caption']}\n" for r in rows))
    assert train_main([*CAPS, 'DATASET.ROOT', str(root), 'OUTPUT_DIR', str(tmp_path/'run')]) == 2
    err = capsys.readouterr().err
    assert f"train.csv:1: expected a header row naming the columns 'image' and 'caption'" in err, err
    assert f"got '{rows[0]['image']},{rows[0]['caption']}'" in err and 'train.csv:2' not in err

def test_a_line_that_is_not_utf8_is_named(tmp_path, capsys):
    root = caption_folder(tmp_path/'caps', dict(train=12, val=10, test=10))
    lines = (root/'train.jsonl').read_bytes().splitlines()
    lines[2] = lines[2].replace(b'"}', b' caf\xe9"}')  # Latin-1 'é'
    (root/'train.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    assert train_main([*CAPS, 'DATASET.ROOT', str(root), 'OUTPUT_DIR', str(tmp_path/'run')]) == 2
    err = capsys.readouterr().err
    assert 'train.jsonl:3: not UTF-8 text (byte 0xe9' in err, err
