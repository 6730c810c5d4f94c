"""Issue 22, retrieval as the benchmarks score it: COCO and Flickr30k in Karpathy's JSON layout (fake trees of tiny images),
their splits and captions per image, and multi-caption recall checked against a hand count (any caption for image→text,
each caption for text→image, as CLIP_benchmark does)."""
import json
from pathlib import Path
import pytest
import torch
from PIL import Image
from clip_strategies.data import get_dataset, DatasetUnavailableError
from clip_strategies.zeroshot import retrieval_metrics
from clip_strategies.cli import train_main

def img(path:Path, i:int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (8, 8), (20 * (i % 12), 60, 90)).save(path)

# Image i of the test split -> the image each of its captions points at (itself: a good caption). Hand count below.
PLAN = {**{i: [i] * 5 for i in range(6)}, 6: [8, 8, 8, 8, 6], 7: [9] * 5, 8: [9] * 5, 9: [7] * 5}

def coco_tree(root:Path, plan=PLAN, n_train=3, n_restval=2, n_val=10)->Path:
    "A fake COCO folder: images under train2014/ and val2014/ (the JSON's `filepath`), 5 captions each, splits interleaved."
    rows, per = [], dict(train=range(n_train), restval=range(n_restval), val=range(n_val), test=plan)
    for i in range(max(len(v) for v in per.values())):  # interleaved: the reader must filter by `split`, not by position
        for split, ids in per.items():
            if i not in ids: continue
            sub = 'train2014' if split == 'train' else 'val2014'
            fn = f'COCO_{sub}_{split}{i:03d}.jpg'; img(root/sub/fn, i)
            n = len(plan[i]) if split == 'test' else 5
            rows.append(dict(filepath=sub, filename=fn, split=split, imgid=len(rows),
                             sentences=[dict(raw=f'{split} {i} {k}', tokens=[split, str(i), str(k)]) for k in range(n)]))
    (root/'dataset_coco.json').write_text(json.dumps(dict(dataset='coco', images=rows)))
    return root

FLICKR = dict(train=[3, 5], val=[5] * 10, test=[4, 5, 6, 5, 5, 5, 3, 5, 5, 5])  # captions per image

def flickr_tree(root:Path)->Path:
    "A fake Flickr30k folder: images in flickr30k-images/, several captions each, no `filepath` (as in Karpathy's file)."
    rows = []
    for split, counts in FLICKR.items():
        for i, n in enumerate(counts):
            fn = f'{1000 * len(split) + i}.jpg'; img(root/'flickr30k-images'/fn, i)
            rows.append(dict(filename=fn, split=split, sentences=[dict(raw=f'a {split} photo {i} said {k} ways') for k in range(n)]))
    (root/'dataset_flickr30k.json').write_text(json.dumps(dict(dataset='flickr30k', images=rows)))
    return root

def test_coco_splits_count_images_and_captions_and_train_takes_restval(tmp_path):
    root = coco_tree(tmp_path/'coco')
    counts = {s: (len(d.captions_by_image()), len(d)) for s in ('train', 'val', 'test') for d in [get_dataset('coco', root, s)]}
    assert counts == dict(train=(5, 25), val=(10, 50), test=(10, 50))
    train = get_dataset('coco_karpathy', tmp_path, 'train')  # the alias, and the data root above coco/
    assert sorted({Path(p).parent.name for p in train.image_paths}) == ['train2014', 'val2014']
    assert train.split_source == 'dataset_coco.json (train+restval)' and train.layout == 'karpathy'
    test = get_dataset('coco', root, 'test')
    groups = test.captions_by_image()
    assert groups[str(root/'val2014'/'COCO_val2014_test006.jpg')] == [f'test 6 {k}' for k in range(5)]
    assert test.text_to_image == [i for i in range(10) for _ in range(5)]

def test_flickr_captions_per_image_and_text_to_image(tmp_path):
    root = flickr_tree(tmp_path/'f30k')
    test = get_dataset('flickr30k', root, 'test')
    assert [len(c) for c in test.captions_by_image().values()] == FLICKR['test']
    assert test.text_to_image == [i for i, n in enumerate(FLICKR['test']) for _ in range(n)]
    assert test.image_paths[0] == str(root/'flickr30k-images'/'4000.jpg') and test.captions[4] == 'a test photo 1 said 0 ways'
    assert len(get_dataset('flickr30k', root, 'train')) == 8

def features(ds)->tuple[torch.Tensor, torch.Tensor]:
    "Image i: e_i. Caption k of image i pointing at w: e_i when w == i, else e_w + e_i/2 (closer to image w than to its own)."
    eye = torch.eye(len(ds.captions_by_image()))
    texts = []
    for caption, own in zip(ds.captions, ds.text_to_image):
        _, i, k = caption.split(); w = PLAN[int(i)][int(k)]
        assert own == int(i)  # the dataset's index agrees with the file
        texts.append(eye[own] if w == own else eye[w] + eye[own] / 2)
    return eye, torch.stack(texts)

def test_multi_caption_recall_matches_the_hand_count(tmp_path):
    """Image→text rank = 1 + captions of other images closer than the image's best own caption:
    images 0-5 and 6 (its last caption is good) rank 1; 7: image 9's five captions are closer (0.89 > 0.45), rank 6;
    8: image 6's four captions point at it, rank 5; 9: the ten captions of 7 and 8 point at it, rank 11.
    So i2t R@1 7/10, R@5 8/10, R@10 9/10. Text→image: a good caption ranks its image 1st (31 of 50), one pointing
    elsewhere 2nd (19): R@1 31/50 = 62%, R@5 100%."""
    ds = get_dataset('coco', coco_tree(tmp_path/'coco'), 'test')
    m = retrieval_metrics(*features(ds), ds.text_to_image)
    assert (m['i2t_r1'], m['i2t_r5'], m['i2t_r10']) == (70.0, 80.0, 90.0)
    assert (m['i2t_medr'], m['i2t_meanr']) == (1.0, 2.9)
    assert (m['t2i_r1'], m['t2i_r5'], m['t2i_r10'], m['t2i_meanr']) == (62.0, 100.0, 100.0, 1.38)

def test_a_missing_json_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"dataset_coco\.json.*cs\.stanford\.edu/people/karpathy/deepimagesent"):
        get_dataset('coco', tmp_path, 'test')
    flickr_tree(tmp_path/'f30k')
    with pytest.raises(DatasetUnavailableError, match=r"dataset_flickr30k\.json"):  # another dataset's JSON is not this one
        get_dataset('flickr30k', tmp_path/'f30k'/'flickr30k-images', 'test')

def test_a_missing_image_folder_or_image_is_named(tmp_path):
    root = flickr_tree(tmp_path/'f30k')
    (root/'flickr30k-images').rename(root/'images')
    with pytest.raises(FileNotFoundError, match=r"No image folder .*flickr30k-images.*dataset_flickr30k\.json \(test\).*DenotationGraph"):
        get_dataset('flickr30k', root, 'test')
    (root/'images').rename(root/'flickr30k-images'); (root/'flickr30k-images'/'4003.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 10 listed images are missing.*4003\.jpg"):
        get_dataset('flickr30k', root, 'test')

def test_a_malformed_file_is_named_with_the_bad_row(tmp_path):
    root = coco_tree(tmp_path/'coco')
    data = json.loads((root/'dataset_coco.json').read_text())
    data['images'][4]['split'] = 'testing'
    (root/'dataset_coco.json').write_text(json.dumps(data))
    with pytest.raises(Exception, match=r"'testing' of .*dataset_coco.json: images\[4\]"): get_dataset('coco', root, 'test')
    del data['images'][4]['filepath']; data['images'][4]['split'] = 'test'
    (root/'dataset_coco.json').write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"images\[4\] lacks \['filepath'\]"): get_dataset('coco', root, 'test')

def test_the_train_command_scores_recall_on_coco(tmp_path, capsys):
    root, out = coco_tree(tmp_path/'coco'), tmp_path/'run'
    args = ['--config', 'mini', '--no-progress', 'DATASET.ALSO_TEST', '[]', 'DATASET.NAME', 'coco', 'DATASET.ROOT', str(root)]
    assert train_main([*args, 'TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)]) == 0
    metrics = json.loads((out/'metrics.json').read_text())  # trained on train + restval (25 pairs), scored on the 10 test images
    assert metrics['task'] == 'retrieval' and metrics['dataset'] == 'coco' and {'i2t_r1', 't2i_r1', 'i2t_r10'} <= set(metrics)
    assert train_main([*args[:-1], str(tmp_path/'nowhere'), 'OUTPUT_DIR', str(tmp_path/'run2')]) != 0
    assert 'dataset_coco.json' in capsys.readouterr().err

def test_flickr30k_as_an_also_test_set_is_read_from_the_data_root(tmp_path):
    "Trained on COCO, scored on Flickr30k too: both sit under DATASET.ROOT, as the field's benchmarks do."
    root, out = tmp_path/'data', tmp_path/'run'
    coco_tree(root/'coco'); flickr_tree(root/'flickr30k')
    assert train_main(['--config', 'mini', '--no-progress', 'DATASET.NAME', 'coco', 'DATASET.ROOT', str(root), 'DATASET.ALSO_TEST', '[flickr30k]',
                       'TRAINER.NAME', 'bitfit', 'OPTIM.MAX_EPOCH', '1', 'OUTPUT_DIR', str(out)]) == 0
    metrics = json.loads((out/'metrics.json').read_text())
    assert {'i2t_r1', 't2i_r1'} <= set(metrics['also']['flickr30k']['after'])  # (before the fix: looked in data_dir(), no such file)
