"""Portable split files: `clip_strategies_splits` writes the few-shot subset a run would draw (relative path, label, class
name, sha256 per image, a checksum over the list), `DATASET.SPLIT_FILE` trains on exactly it and the recipe card records
the file's checksum, and a changed or missing image, an edited line or a file for another dataset is a clear error."""
import json
from pathlib import Path
import pytest
from PIL import Image
from clip_strategies.cli import train_main, splits_main, build_splits, resolve_config
from clip_strategies.config import load_config
from clip_strategies.data import few_shot_splits, split_checksum
from clip_strategies.models import load_clip
from clip_strategies.split_files import write_split_file, read_split_file, read_split_header, split_items, SplitFileError

COLOURS = {'red': (1, 0, 0), 'green': (0, 1, 0), 'blue': (0, 0, 1)}

@pytest.fixture
def folder(tmp_path):
    "A tiny real image folder: ROOT/{train,test}/{red,green,blue}/*.png, 12 train and 2 test images a class."
    root = tmp_path/'colours'
    for c, rgb in COLOURS.items():
        for split, n in (('train', 12), ('test', 2)):
            (root/split/c).mkdir(parents=True)
            for i in range(n): Image.new('RGB', (8, 8), tuple(int((40 + 17 * i) * v) for v in rgb)).save(root/split/c/f'{i:02d}.png')
    return root

def write(folder, out, *over):
    "Run `clip_strategies_splits` on the image folder; its exit status."
    return splits_main(['--no-progress', 'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', str(folder), *over, '--out', str(out)])

def train_args(folder, f, out, *more):
    return ['--config', 'mini', '--no-progress', 'DATASET.NAME', 'imagefolder', 'DATASET.ROOT', str(folder), 'DATASET.ALSO_TEST', '[]',
            'OPTIM.MAX_EPOCH', '1', 'DATASET.SPLIT_FILE', str(f), 'OUTPUT_DIR', str(out), *more]

def test_write_then_read_gives_the_same_items_labels_and_checksum(folder, tmp_path):
    splits = few_shot_splits('imagefolder', folder, 4, 1)
    header = write_split_file(splits, tmp_path/'s.jsonl', folder, name='imagefolder', num_shots=4, seed=1, progress=False)
    lines = [json.loads(l) for l in (tmp_path/'s.jsonl').read_text().splitlines()]  # plain JSON, one object a line
    assert lines[0]['checksum'] == header['checksum'] and lines[0]['library_version'] and lines[0]['dataset'] == 'imagefolder'
    assert {k for r in lines[1:] for k in r} == {'split', 'path', 'label', 'class', 'sha256'}
    assert all(not Path(r['path']).is_absolute() for r in lines[1:]) and len(lines) == 1 + 12 + 12
    back = read_split_file(tmp_path/'s.jsonl', folder, name='imagefolder')
    for s in ('train', 'val'):
        assert split_items(back[s], folder) == split_items(splits[s], folder)
        assert back[s].labels == splits[s].labels and back[s].classnames == splits[s].classnames
        assert back[s].split_file['checksum'] == header['checksum'] and split_checksum(back[s])
    assert back['train'][0][1] == splits['train'][0][1]

def test_the_command_writes_what_a_run_draws_and_checks_it(folder, tmp_path, capsys):
    f = tmp_path/'colours_4s_seed2.jsonl'
    assert write(folder, f, 'DATASET.NUM_SHOTS', '4', 'SEED', '2') == 0
    assert 'wrote' in capsys.readouterr().out
    cfg = load_config(resolve_config('mini'), {'DATASET.NAME': 'imagefolder', 'DATASET.ROOT': str(folder), 'DATASET.NUM_SHOTS': 4, 'SEED': 2})
    drawn = build_splits(cfg, load_clip('mini')[1])  # what clip_strategies_train draws with that config
    back = read_split_file(f, folder)
    assert all(split_items(back[s], folder) == split_items(drawn[s], folder) for s in ('train', 'val'))
    assert splits_main(['--check', str(f), 'DATASET.ROOT', str(folder), 'DATASET.NAME', 'imagefolder']) == 0
    assert capsys.readouterr().out.startswith(f"ok: {f}: imagefolder, 4 shots, seed 2")
    assert splits_main(['DATASET.ROOT', str(folder)]) == 2 and 'error: give one of --out' in capsys.readouterr().err

def test_a_run_from_a_split_file_trains_on_its_subset_and_records_its_checksum(folder, tmp_path, capsys):
    f = tmp_path/'colours_2s_seed3.jsonl'
    assert write(folder, f, 'DATASET.NUM_SHOTS', '2', 'SEED', '3') == 0
    capsys.readouterr()
    assert train_main(train_args(folder, f, tmp_path/'run')) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "note: DATASET.SPLIT_FILE" in said and "DATASET.NUM_SHOTS=2, SEED=3 are used, not the config's DATASET.NUM_SHOTS=16, SEED=1" in said, said
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    header = read_split_header(f)
    assert m['num_shots'] == 2 and m['seed'] == 3
    assert m['card']['split_file']['checksum'] == header['checksum'] and m['card']['split_file']['path'] == str(f)
    assert m['card']['split_checksums']['train'] == split_checksum(read_split_file(f, folder)['train'])
    cfg = load_config(resolve_config('mini'), {'DATASET.NAME': 'imagefolder', 'DATASET.ROOT': str(folder), 'DATASET.SPLIT_FILE': str(f)})
    used = build_splits(cfg, load_clip('mini')[1])
    lines = [json.loads(l) for l in f.read_text().splitlines()[1:]]
    assert [p for p, _ in split_items(used['train'], folder)] == [r['path'] for r in lines if r['split'] == 'train']
    assert len(used['train']) == 6 and len(used['test']) == 6

def _edit_label(f):
    lines = f.read_text().splitlines()
    row = json.loads(lines[1]); row['label'] = (row['label'] + 1) % 3; lines[1] = json.dumps(row)
    f.write_text('\n'.join(lines) + '\n')

def _first_paths(f, n=2): return [json.loads(l)['path'] for l in f.read_text().splitlines()[1:1 + n]]

@pytest.mark.parametrize('damage, expected', [
    ('changed', ["1 of the 24 images", "1 changed: {0}"]),
    ('missing', ["2 of the 24 images", "2 missing: {0}, {1}"]),
    ('edited', ["was edited after it was written"]),
])
def test_check_names_what_changed(folder, tmp_path, capsys, damage, expected):
    f = tmp_path/'s.jsonl'
    assert write(folder, f, 'DATASET.NUM_SHOTS', '4') == 0
    paths = _first_paths(f)
    if damage == 'changed': Image.new('RGB', (8, 8), (5, 5, 5)).save(folder/paths[0])
    if damage == 'missing': [(folder/p).unlink() for p in paths]
    if damage == 'edited': _edit_label(f)
    capsys.readouterr()
    assert splits_main(['--check', str(f), 'DATASET.ROOT', str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('clip_strategies_splits: error: ') and all(e.format(*paths) in err for e in expected), err

def test_a_run_refuses_a_changed_image_and_a_file_for_another_dataset(folder, tmp_path, capsys):
    f = tmp_path/'s.jsonl'
    assert write(folder, f, 'DATASET.NUM_SHOTS', '2') == 0
    (folder/_first_paths(f, 1)[0]).write_bytes(b'not the image any more')
    capsys.readouterr()
    assert train_main(train_args(folder, f, tmp_path/'run')) == 2
    err = capsys.readouterr().err
    assert 'error: 1 of the 12 images of split file' in err and f'1 changed: {_first_paths(f, 1)[0]}' in err, err
    assert not (tmp_path/'run'/'metrics.json').exists()
    args = train_args(folder, f, tmp_path/'run2'); args[args.index('imagefolder')] = 'eurosat'
    capsys.readouterr()
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "is for dataset 'imagefolder', but DATASET.NAME is 'eurosat'" in err, err
