"Issue 21: the field's datasets in CoOp's layouts (tiny fake trees of every layout), the authors' split files, Dassl's sampler."
import json, os, random, subprocess, sys, warnings
from pathlib import Path
import pytest
from PIL import Image
import clip_strategies.benchmarks as B
from clip_strategies.data import (get_dataset, few_shot_splits, few_shot_indices, dassl_few_shot, split_checksum, LabeledSubset,
                                  DatasetUnavailableError)
from clip_strategies.cli import train_main

def img(path:Path, color=(10, 20, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (8, 8), color).save(path, format=fmt)

# Each split-file dataset: (image root inside the folder, relative path of image i of class folder d)
SPLIT_FILE_PATHS = {
    'eurosat': lambda d, i: f'{d}/{d}_{i}.jpg', 'caltech101': lambda d, i: f'{d}/image_{i:04d}.jpg',
    'oxford_pets': lambda d, i: f'{d}_{i}.jpg', 'stanford_cars': lambda d, i: f'cars_train/{d}{i:05d}.jpg',
    'flowers102': lambda d, i: f'image_{d}{i:04d}.jpg', 'food101': lambda d, i: f'{d}/{i}.jpg',
    'sun397': lambda d, i: f'{d[0]}/{d}/sun_{i}.jpg', 'dtd': lambda d, i: f'{d}/{d}_{i}.jpg', 'ucf101': lambda d, i: f'{d}/v_{d}_g01_c0{i}.jpg'}
CLASSES = {'eurosat': [('AnnualCrop', 'Annual Crop Land'), ('River', 'River'), ('SeaLake', 'Sea or Lake')],
           'caltech101': [('Faces', 'face'), ('accordion', 'accordion'), ('airplanes', 'airplane')],
           'stanford_cars': [('a', '2012 Tesla Model S'), ('b', '1991 Volkswagen Golf Hatchback'), ('c', '2007 BMW X5 SUV')]}

def split_file_tree(root:Path, name:str, n:int=8, ntrain:int=5, nval:int=1)->Path:
    "A fake CoOp folder of a split-file dataset: n images per class, the authors' JSON (train, val, rest test), train rows shuffled."
    lay = B.COOP_LAYOUTS[name]; folder = root/lay['folder']; base = folder/lay['images'] if lay['images'] else folder
    classes = CLASSES.get(name, [('abbey', 'abbey'), ('bamboo_forest', 'bamboo forest'), ('canyon', 'canyon')])
    rows = dict(train=[], val=[], test=[])
    for label, (d, cname) in enumerate(classes):
        for i in range(n):
            rel = SPLIT_FILE_PATHS[name](d, i); img(base/rel, (60 * label, 25 * i, 100))
            rows['train' if i < ntrain else 'val' if i < ntrain + nval else 'test'].append([rel, label, cname])
    random.Random(0).shuffle(rows['train'])  # the file's order, not sorted by class: the sampler must follow it
    (folder/lay['split_file']).write_text(json.dumps(rows))
    return folder

SYNSETS = ['n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475']
NAMES = ['tench', 'goldfish', 'great white shark', 'tiger shark', 'hammerhead']

def classnames_txt(path:Path, synsets=SYNSETS, names=NAMES):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'{s} {n}' for s, n in zip(synsets, names)]
    path.write_text('\n'.join(reversed(lines)) + '\n')  # file order need not be sorted: labels follow the sorted synsets

def imagenet_tree(root:Path, ntrain=6, nval=2)->Path:
    folder = root/'imagenet'; classnames_txt(folder/'classnames.txt')
    for k, s in enumerate(SYNSETS):
        for i in range(ntrain): img(folder/'images'/'train'/s/f'{s}_{i}.JPEG', (k * 40, i * 30, 0), 'JPEG')
        for i in range(nval): img(folder/'images'/'val'/s/f'ILSVRC2012_val_{k}{i}.JPEG', (k * 40, 0, i * 30), 'JPEG')
    return folder

def fgvc_tree(root:Path)->Path:
    folder = root/'fgvc_aircraft'; variants = ['707-320', 'A300B4', 'Boeing 717']
    (folder/'images').mkdir(parents=True)
    (folder/'variants.txt').write_text('\n'.join(variants) + '\n')
    for split, n in [('train', 4), ('val', 2), ('test', 2)]:
        lines = []
        for k, v in enumerate(variants):
            for i in range(n):
                imid = f'{split[:2]}{k}{i:04d}'; img(folder/'images'/f'{imid}.jpg'); lines.append(f'{imid} {v}')
        (folder/f'images_variant_{split}.txt').write_text('\n'.join(lines) + '\n')
    return folder

def variant_tree(root:Path, name:str, folders:list)->Path:
    lay = B.COOP_LAYOUTS[name]; folder = root/lay['folder']; classnames_txt(folder/'classnames.txt')
    for f in folders:
        for i in range(2): img(folder/lay['images']/f/f'{i}.jpg')
    (folder/lay['images']/'README.txt').write_text('ignored')
    return folder

# ---- reading each layout ----

@pytest.mark.parametrize('name', list(SPLIT_FILE_PATHS))
def test_split_file_layouts_read_the_authors_split(tmp_path, name):
    folder = split_file_tree(tmp_path, name)
    rows = json.loads((folder/B.COOP_LAYOUTS[name]['split_file']).read_text())
    for split in ('train', 'val', 'test'):
        ds = get_dataset(name, tmp_path, split)
        assert len(ds) == len(rows[split]) and ds.labels == [r[1] for r in rows[split]]
        assert ds.split_source == B.COOP_LAYOUTS[name]['split_file'] and ds.sampler == 'dassl'
    assert ds.classnames == [c for _, c in CLASSES.get(name, [(0, 'abbey'), (0, 'bamboo forest'), (0, 'canyon')])]
    assert ds.templates == [B.DATASET_TEMPLATES[name]]
    assert len(get_dataset(name, folder, 'test')) == len(rows['test'])  # the dataset's own folder as the root
    if name == 'stanford_cars': assert ds.items[0][0].startswith(str(folder/'cars_train'))  # relative to stanford_cars/

def test_oxford_flowers_is_a_name_for_flowers102(tmp_path):
    split_file_tree(tmp_path, 'flowers102')
    assert get_dataset('oxford_flowers', tmp_path, 'train').split_source == 'split_zhou_OxfordFlowers.json'

def test_imagenet(tmp_path):
    imagenet_tree(tmp_path)
    train, test, val = (get_dataset('imagenet', tmp_path, s) for s in ('train', 'test', 'val'))
    assert train.classnames == NAMES and train.synsets == SYNSETS  # labels = sorted synsets, names from classnames.txt
    assert (len(train), len(test), len(val)) == (30, 10, 10) and test.labels == [k for k in range(5) for _ in range(2)]
    assert val.items == test.items  # CoOp's val is the official val, which is also its test
    fs = few_shot_splits('imagenet', tmp_path, num_shots=2, seed=1)
    paths = lambda d: {d.dataset.items[i][0] for i in d.indices}
    assert len(fs['train']) == 10 and len(fs['val']) == 10
    assert paths(fs['val']) <= {p for p, _ in train.items} and not paths(fs['val']) & paths(fs['train'])  # ours: from train

def test_fgvc_aircraft(tmp_path):
    fgvc_tree(tmp_path)
    tr, va, te = (get_dataset('fgvc_aircraft', tmp_path, s) for s in ('train', 'val', 'test'))
    assert tr.classnames == ['707-320', 'A300B4', 'Boeing 717'] and (len(tr), len(va), len(te)) == (12, 6, 6)
    assert tr.labels == [0] * 4 + [1] * 4 + [2] * 4 and tr.items[0][0].endswith('images/tr00000.jpg')
    fs = few_shot_splits('fgvc_aircraft', tmp_path, num_shots=2, seed=3)
    t, v = dassl_few_shot(tr.labels, va.labels, 2, 3)
    assert (fs['train'].indices, fs['val'].indices) == (t, v) and fs['val'].dataset.items == va.items

def test_imagenet_v2_and_sketch(tmp_path):
    variant_tree(tmp_path, 'imagenet_v2', ['0', '1', '2', '3', '4'])
    variant_tree(tmp_path, 'imagenet_sketch', SYNSETS)
    v2, sk = get_dataset('imagenet_v2', tmp_path), get_dataset('imagenet_sketch', tmp_path)
    assert v2.classnames == sk.classnames == NAMES and v2.labels == sk.labels == [k for k in range(5) for _ in range(2)]

@pytest.mark.parametrize('name', ['imagenet_a', 'imagenet_r'])
def test_imagenet_a_r_have_200_class_style_labels_and_the_mapping(tmp_path, name):
    variant_tree(tmp_path, name, [SYNSETS[4], SYNSETS[1]])
    ds = get_dataset(name, tmp_path)
    assert ds.classnames == ['goldfish', 'hammerhead'] and ds.labels == [0, 0, 1, 1]
    assert ds.imagenet_classes == [1, 4]  # positions among ImageNet's sorted synsets

@pytest.mark.parametrize('name', B.IMAGENET_VARIANTS if hasattr(B, 'IMAGENET_VARIANTS') else ['imagenet_v2', 'imagenet_sketch', 'imagenet_a', 'imagenet_r'])
@pytest.mark.parametrize('split', ['train', 'val'])
def test_test_only_datasets_refuse_train_and_val(tmp_path, name, split):
    with pytest.raises(ValueError, match=f"{name}' is a test-only dataset.*no '{split}' split"): get_dataset(name, tmp_path, split)

# ---- Dassl's sampler on the authors' split, and the mini lab unchanged ----

def test_few_shot_splits_of_a_split_file_are_dassl_draw_then_base_new(tmp_path):
    split_file_tree(tmp_path, 'dtd', n=9, ntrain=6, nval=3)
    tr, va = get_dataset('dtd', tmp_path, 'train'), get_dataset('dtd', tmp_path, 'val')
    for k, seed in [(1, 1), (4, 2), (16, 3)]:  # 16 > 6 images per class: Dassl keeps them all, no error
        fs = few_shot_splits('dtd', tmp_path, num_shots=k, seed=seed)
        assert (fs['train'].indices, fs['val'].indices) == dassl_few_shot(tr.labels, va.labels, k, seed)
    fs = few_shot_splits('dtd', tmp_path, num_shots=2, seed=1, subsample='new')
    t, _ = dassl_few_shot(tr.labels, va.labels, 2, 1)  # drawn over every class first, then the new half kept
    assert fs['train'].classnames == ['canyon'] and [fs['train'].dataset.indices[i] for i in fs['train'].indices] == [i for i in t if tr.labels[i] == 2]

def test_mini_lab_keeps_its_sampler():
    fs = few_shot_splits('mini_shift', num_shots=4, seed=1)
    train = get_dataset('mini_shift', split='train')
    tr, va = few_shot_indices(train.labels, 4, 1, 4, train.classnames)
    assert (fs['train'].indices, fs['val'].indices) == (tr, va)

# ---- the done-when: the train command on the papers' split ----

def test_train_command_trains_on_the_papers_split_of_eurosat(tmp_path, capsys):
    folder = split_file_tree(tmp_path/'data', 'eurosat')
    out = tmp_path/'out'
    args = ['--config', 'vit_b16', 'TRAINER.NAME', 'coop', 'DATASET.NAME', 'eurosat', 'DATASET.ROOT', str(tmp_path/'data'),
            # real CLIP weights cannot be fetched here: the mini backbone under the vit_b16 config's keys
            'MODEL.BACKBONE.NAME', 'mini', 'MODEL.BACKBONE.PRETRAINED', 'null', 'INPUT.SIZE', 'null', 'TRAIN.PRECISION', 'fp32',
            'DATASET.NUM_SHOTS', '2', 'OPTIM.MAX_EPOCH', '1', 'DATALOADER.NUM_WORKERS', '0', '--no-progress', 'OUTPUT_DIR', str(out)]
    assert train_main(args) == 0, capsys.readouterr().err
    card = json.loads((out/'metrics.json').read_text())['card']
    rows = json.loads((folder/'split_zhou_EuroSAT.json').read_text())
    random.seed(1)  # Dassl: global random seeded with SEED, K per class in the file's order, then min(K, 4) from val
    groups = {}
    for i, r in enumerate(rows['train']): groups.setdefault(r[1], []).append(i)
    picks = [i for items in groups.values() for i in random.sample(items, 2)]
    want = LabeledSubset(get_dataset('eurosat', tmp_path/'data', 'train'), picks)
    assert card['split_checksums']['train'] == split_checksum(want)

# ---- bad input: each missing or wrong piece ----

def test_no_folder_and_no_torchvision_names_the_folder_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError) as e: get_dataset('sun397', tmp_path)
    for part in [str(tmp_path/'sun397'), 'sun397/SUN397/', 'split_zhou_SUN397.json', B.COOP_DATASETS_URL]: assert part in str(e.value)

def test_offline_fallback_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv('CLIP_STRATEGIES_OFFLINE', '1')
    with pytest.raises(DatasetUnavailableError) as e: get_dataset('eurosat', tmp_path)
    for part in [str(tmp_path/'eurosat'), 'split_zhou_EuroSAT.json', 'torchvision', 'offline mode']: assert part in str(e.value)

def test_torchvision_fallback_warns_that_its_splits_differ(tmp_path):
    for c in ['BACKGROUND_Google', 'Faces', 'accordion']:
        for i in range(1, 4): img(tmp_path/'caltech101'/'101_ObjectCategories'/c/f'image_{i:04d}.jpg')
    with pytest.warns(B.TorchvisionSplitWarning, match="differ from the papers'"): ds = get_dataset('caltech101', tmp_path, download=False)
    assert ds.classnames == ['face', 'accordion'] and not hasattr(ds, 'split_source')
    with pytest.raises(DatasetUnavailableError, match='caltech-101'): get_dataset('caltech101', tmp_path, layout='coop')

def test_missing_split_file_is_named_not_replaced_by_a_random_split(tmp_path, capsys):
    folder = split_file_tree(tmp_path, 'eurosat'); (folder/'split_zhou_EuroSAT.json').rename(folder/'split_zhou_DescribableTextures.json')
    with pytest.raises(FileNotFoundError, match="No split file .*split_zhou_EuroSAT.json.*split of 'dtd', not of 'eurosat'"): get_dataset('eurosat', tmp_path)
    assert train_main(['--config', 'mini', 'DATASET.NAME', 'eurosat', 'DATASET.ROOT', str(tmp_path), 'OUTPUT_DIR', str(tmp_path/'o')]) == 2
    assert 'split_zhou_EuroSAT.json' in capsys.readouterr().err
    with warnings.catch_warnings(record=True):  # the way out: torchvision's split of the same folder, asked for by name
        warnings.simplefilter('always')
        assert len(get_dataset('eurosat', tmp_path, 'test', layout='torchvision')) > 0

def test_missing_images_are_named_with_their_count(tmp_path):
    folder = split_file_tree(tmp_path, 'food101')
    for i in range(2): (folder/'images'/'abbey'/f'{i}.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 15 listed images are missing .*abbey/0.jpg"): get_dataset('food101', tmp_path, 'train')
    split_file_tree(tmp_path/'x', 'dtd'); (tmp_path/'x'/'dtd'/'split_zhou_DescribableTextures.json').write_text(
        (folder/'split_zhou_Food101.json').read_text().replace('abbey/', 'zzz/'))
    with pytest.raises(FileNotFoundError, match='None of them exists: is the file for another dataset'): get_dataset('dtd', tmp_path/'x', 'test')

def test_missing_image_root_is_named(tmp_path):
    folder = split_file_tree(tmp_path, 'ucf101'); (folder/'UCF-101-midframes').rename(folder/'frames')
    with pytest.raises(FileNotFoundError, match="No folder .*UCF-101-midframes"): get_dataset('ucf101', tmp_path)

@pytest.mark.parametrize('content, words', [
    ({'train': [], 'test': []}, "exactly the keys 'train', 'val', 'test'"),
    ({'train': [['a.jpg', 0]], 'val': [], 'test': []}, "train[0] = ['a.jpg', 0] is not [relative_image_path, label, classname]"),
    ({'train': [['a/1.jpg', 0, 'a'], ['b/1.jpg', 0, 'b']], 'val': [], 'test': []}, "label 0 is named both 'a' and 'b'"),
    ({'train': [['a/1.jpg', 0, 'a'], ['b/1.jpg', 2, 'b']], 'val': [], 'test': []}, "no item has label 1"),
    ({'train': [['AnnualCrop/1.jpg', 0, 'abbey']], 'val': [], 'test': []}, "'abbey' is not one of EuroSAT's")])
def test_bad_split_files_are_refused_naming_the_bad_value(tmp_path, content, words):
    folder = split_file_tree(tmp_path, 'eurosat'); (folder/'split_zhou_EuroSAT.json').write_text(json.dumps(content))
    with pytest.raises(ValueError) as e: get_dataset('eurosat', tmp_path)
    assert words in str(e.value) and 'split_zhou_EuroSAT.json' in str(e.value)

def test_imagenet_class_name_file_that_disagrees_with_the_folders(tmp_path):
    folder = imagenet_tree(tmp_path)
    (folder/'images'/'train'/'n09999999').mkdir()
    with pytest.raises(ValueError, match=r"1 class folder\(s\) of .*images/train' are not in .*classnames.txt.*n09999999"): get_dataset('imagenet', tmp_path)
    (folder/'images'/'train'/'n09999999').rmdir(); classnames_txt(folder/'classnames.txt', SYNSETS + ['n02000000'], NAMES + ['x'])
    with pytest.raises(ValueError, match=r"lists 1 synset\(s\) with no folder .*n02000000"): get_dataset('imagenet', tmp_path)
    (folder/'classnames.txt').write_text('tench n01440764\n')
    with pytest.raises(ValueError, match=r"classnames.txt:1: expected 'nXXXXXXXX class name'"): get_dataset('imagenet', tmp_path)
    (folder/'classnames.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r"No file .*imagenet/classnames.txt"): get_dataset('imagenet', tmp_path)

def test_imagenet_missing_val_and_unknown_val_folder(tmp_path):
    folder = imagenet_tree(tmp_path)
    img(folder/'images'/'val'/'n07777777'/'x.JPEG')
    with pytest.raises(ValueError, match="n07777777"): get_dataset('imagenet', tmp_path, 'test')
    import shutil; shutil.rmtree(folder/'images'/'val')
    with pytest.raises(FileNotFoundError, match=r"No folder .*images/val"): get_dataset('imagenet', tmp_path, 'test')

def test_fgvc_missing_pieces(tmp_path):
    folder = fgvc_tree(tmp_path)
    (folder/'images'/'te00000.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 6 listed images are missing .*te00000.jpg"): get_dataset('fgvc_aircraft', tmp_path, 'test')
    (folder/'images_variant_val.txt').write_text('va00000 Concorde\n')
    with pytest.raises(ValueError, match=r"images_variant_val.txt:1: variant 'Concorde' is not in variants.txt"): get_dataset('fgvc_aircraft', tmp_path, 'val')
    (folder/'images_variant_train.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r"No file .*images_variant_train.txt"): get_dataset('fgvc_aircraft', tmp_path, 'train')
    (folder/'variants.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r"No file .*variants.txt"): get_dataset('fgvc_aircraft', tmp_path, 'train')

def test_variant_folders_that_disagree_with_classnames(tmp_path):
    variant_tree(tmp_path, 'imagenet_v2', ['0', '1', '7'])
    with pytest.raises(ValueError, match=r"Folder .*/7' is not a class number 0..4"): get_dataset('imagenet_v2', tmp_path)
    variant_tree(tmp_path, 'imagenet_r', ['n01440764', 'n03333333'])
    with pytest.raises(ValueError, match=r"class folder\(s\) of .*imagenet-r' are not in .*classnames.txt.*n03333333"): get_dataset('imagenet_r', tmp_path)
    variant_tree(tmp_path, 'imagenet_sketch', SYNSETS[:3])
    with pytest.raises(ValueError, match=r"lists 2 synset\(s\) with no folder"): get_dataset('imagenet_sketch', tmp_path)
    (tmp_path/'imagenet-adversarial').mkdir()
    with pytest.raises(FileNotFoundError, match=r"No file .*imagenet-adversarial/classnames.txt"): get_dataset('imagenet_a', tmp_path/'imagenet-adversarial')

def test_registered_where_users_build_datasets_by_name(tmp_path):
    "`clip_strategies.get_dataset` reaches the builders; the config and the train command import the module that registers them."
    split_file_tree(tmp_path, 'eurosat')
    code = f"import clip_strategies as c; print(c.get_dataset('eurosat', {str(tmp_path)!r}, 'val').split_source, 'imagenet_r' in c.list_datasets())"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.stdout.split() == ['split_zhou_EuroSAT.json', 'True'], out.stderr
    import ast
    for mod in ('config', 'cli'):
        tree = ast.parse((Path(B.__file__).parent/f'{mod}.py').read_text())
        assert any(isinstance(n, ast.Import) and any(a.name == 'clip_strategies.benchmarks' for a in n.names) for n in tree.body), mod
