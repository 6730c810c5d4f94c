"""Fidelity: Dassl's few-shot sampler, transcribed from the authors' code, vs `clip_strategies.data.dassl_few_shot`.

Authors' code: KaiyangZhou/Dassl.pytorch @ c61a1b57 (alias `Dassl` in /work/shared/RECIPES.md §0). RECIPES.md §3.3:
  * `DatasetBase.generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False)`: Dassl:dassl/data/datasets/base_dataset.py#L167-209;
  * `DatasetBase.split_dataset_by_label(data_source)` (a defaultdict: labels in first-appearance order): #L211-223;
  * python's global `random`, seeded by `set_random_seed(cfg.SEED)` before the dataset is built (CoOp:train.py#L128-142;
    Dassl:dassl/utils/tools.py#L73-77);
  * the CoOp datasets call it twice: `train = generate_fewshot_dataset(train, num_shots=K)` then
    `val = generate_fewshot_dataset(val, num_shots=min(K, 4))` (CoOp:datasets/oxford_pets.py#L33-49).
The transcription below exists for the test only.
"""
import random
from collections import defaultdict
import pytest
from clip_strategies.data import dassl_few_shot

class Datum:
    "Dassl's Datum, reduced to what the sampler reads (its label) plus an id to compare picks."
    def __init__(self, impath, label): self.impath, self.label = impath, label

def split_dataset_by_label(data_source):
    "Dassl:dassl/data/datasets/base_dataset.py#L211-223."
    output = defaultdict(list)
    for item in data_source: output[item.label].append(item)
    return output

def generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
    "Dassl:dassl/data/datasets/base_dataset.py#L167-209."
    if num_shots < 1:
        if len(data_sources) == 1: return data_sources[0]
        return data_sources
    output = []
    for data_source in data_sources:
        tracker = split_dataset_by_label(data_source)
        dataset = []
        for label, items in tracker.items():
            if len(items) >= num_shots: sampled_items = random.sample(items, num_shots)
            else:
                if repeat: sampled_items = random.choices(items, k=num_shots)
                else: sampled_items = items
            dataset.extend(sampled_items)
        output.append(dataset)
    if len(output) == 1: return output[0]
    return output

def coop_fewshot(train, val, num_shots, seed):
    "CoOp:datasets/oxford_pets.py#L33-49 after `set_random_seed(seed)`: train with K, then val with min(K, 4)."
    random.seed(seed)
    return generate_fewshot_dataset(train, num_shots=num_shots), generate_fewshot_dataset(val, num_shots=min(num_shots, 4))

def data_source(labels, tag):
    return [Datum(f'{tag}{i}', l) for i, l in enumerate(labels)]

def label_orders():
    "Label lists: sorted blocks, interleaved, shuffled, and classes with fewer than K items."
    rng = random.Random(123)
    shuffled = [c for c in range(7) for _ in range(9)]; rng.shuffle(shuffled)
    return {'blocks': [c for c in range(5) for _ in range(20)],
            'interleaved': [i % 6 for i in range(60)],
            'shuffled': shuffled,
            'unsorted first appearance': [3] * 10 + [0] * 12 + [2] * 2 + [1] * 17 + [4],
            'small classes': [0] * 3 + [1] * 30 + [2] * 1 + [3] * 16}

@pytest.mark.parametrize('order', list(label_orders()))
@pytest.mark.parametrize('num_shots', [1, 2, 4, 8, 16])
@pytest.mark.parametrize('seed', [1, 2, 3])
def test_library_picks_what_dassl_picks(order, num_shots, seed):
    train_labels = label_orders()[order]
    val_labels = list(reversed(train_labels))[: len(train_labels) // 2]
    ref_train, ref_val = coop_fewshot(data_source(train_labels, 't'), data_source(val_labels, 'v'), num_shots, seed)
    train, val = dassl_few_shot(train_labels, val_labels, num_shots, seed)
    assert [f't{i}' for i in train] == [d.impath for d in ref_train]
    assert [f'v{i}' for i in val] == [d.impath for d in ref_val]

def test_classes_with_fewer_than_k_keep_all_their_items():
    labels = [0] * 3 + [1] * 30
    train, _ = dassl_few_shot(labels, [], 16, 1)
    assert sorted(i for i in train if labels[i] == 0) == [0, 1, 2] and sum(labels[i] == 1 for i in train) == 16

def test_the_global_rng_state_does_not_matter():
    "Dassl seeds the global RNG; the library uses its own, so the picks do not depend on what ran before."
    random.seed(99); a = dassl_few_shot([0, 1] * 20, [0, 1] * 5, 4, 1)
    random.random(); b = dassl_few_shot([0, 1] * 20, [0, 1] * 5, 4, 1)
    assert a == b
