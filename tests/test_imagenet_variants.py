"Issue 21: ImageNet-A/R scored by a head trained on ImageNet go through the 200-class mapping; a head of other classes is refused."
import json
import pytest, torch
from clip_strategies.models import load_clip
from clip_strategies.data import get_dataset, few_shot_splits
from clip_strategies.evaluate import class_scores, dataset_columns
from clip_strategies.strategy import get_strategy
from clip_strategies.zeroshot import split_features
from clip_strategies.cli import train_main
from test_benchmarks import imagenet_tree, variant_tree, SYNSETS

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    imagenet_tree(root); variant_tree(root, 'imagenet_a', [SYNSETS[4], SYNSETS[1]])
    model, prep, tok = load_clip('mini', device='cpu')
    return root, model, prep, tok

def test_an_imagenet_head_scores_imagenet_a_through_its_mapping(lab):
    root, model, prep, tok = lab
    st = get_strategy('linear_probe'); st.apply(model)
    sp = few_shot_splits('imagenet', root, 2, 1, prep, prep)
    st.fit(model, tok, dict(train=sp['train'], val=sp['val']))
    a = get_dataset('imagenet_a', root, 'test', prep)
    logits, labels = class_scores(model, tok, a, strategy=st)
    assert logits.shape == (len(a), 2)
    full = st.class_head(model, tok, get_dataset('imagenet', root, 'test', prep))  # the probe's own 5-class head
    feats, _ = split_features(model, a, 256)
    torch.testing.assert_close(logits, full(feats).float()[:, [1, 4]])  # A's classes (sorted folders) are ImageNet's 1 and 4

def test_a_head_of_other_width_is_refused_naming_both(lab):
    a = get_dataset('imagenet_a', lab[0], 'test')
    with pytest.raises(ValueError, match=r"scores 5 classes but 'imagenet_a' has 2"): dataset_columns(torch.zeros(3, 5), a)
    assert dataset_columns(torch.zeros(3, 2), a).shape == (3, 2)

def test_also_test_reads_the_field_s_benchmarks_from_dataset_root(lab, tmp_path):
    root = lab[0]
    args = ['--config', 'mini', '--no-progress', 'TRAINER.NAME', 'linear_probe', 'DATASET.NAME', 'imagenet', 'DATASET.ROOT', str(root),
            'DATASET.NUM_SHOTS', '2', 'DATASET.ALSO_TEST', '[imagenet_a]', 'DATALOADER.NUM_WORKERS', '0', 'OUTPUT_DIR', str(tmp_path/'out')]
    assert train_main(args) == 0
    also = json.loads((tmp_path/'out'/'metrics.json').read_text())['also']
    assert 'accuracy' in also['imagenet_a']['after']
