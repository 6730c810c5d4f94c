"The mini CLIP's byte-level BPE tokenizer: no unknown token, injective on cleaned text, open_clip-compatible ids."
import pytest, torch
from clip_strategies.mini import (MiniBPE, MINI_BPE_MERGES, MINI_BPE_WORDS, clean_text, split_words, corpus_word_counts,
                                  train_bpe, mini_bpe_corpus)

TOK = MiniBPE()
CLASSNAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'circle', 'square', 'zebra',
              'dodecahedron', 'sea lion', 'sea-lion', 'sealion', 'Sea Lion', 'café', 'cafe', '7', '77', 'a', 'an', '🦓', '']
TEXTS = ['a photo of a red circle.', 'A  Photo of\ta RED circle!', "a close-up photo of the dodecahedron, it's 3D",
         'a zebra 🦓 in a café', '</w>x</w>', 'hello_world__x', '  leading and trailing  ', "don't", '.', '']

def test_corpus_words_are_single_tokens():
    forms = corpus_word_counts(mini_bpe_corpus(2000))
    for piece, final in forms: assert len(TOK.bpe(piece, final)) == 1, (piece, final)  # 'circle' in "circle." and "circle shape"
    assert {p for p, _ in forms} == set(MINI_BPE_WORDS)
    assert len(TOK.encode('a photo of a small red circle on a white background.')) == 12  # one id per word, and '.'

def test_unseen_words_get_several_ids_and_no_unknown():
    for w in ['dodecahedron', 'zebra']:
        ids = TOK.encode(w)
        assert len(ids) > 1 and all(0 < i < TOK.sot_token_id for i in ids), (w, ids)
    assert TOK.unseen_words(['a photo of a zebra.', 'a photo of a circle.']) == ['zebra']
    assert TOK.unseen_words('a close-up photo') == ['-']

def test_distinct_names_distinct_sequences():
    seqs = {}
    for c in CLASSNAMES:
        seqs.setdefault(tuple(TOK.encode(c)), set()).add(clean_text(c))
    assert all(len(v) == 1 for v in seqs.values()), [v for v in seqs.values() if len(v) > 1]
    assert TOK.encode('Sea Lion') == TOK.encode('sea lion')  # cleaning lower-cases: the same cleaned text
    rows = TOK([f'a photo of a {c}.' for c in CLASSNAMES])
    assert len({tuple(r.tolist()) for r in rows}) == len(CLASSNAMES) - 1  # 'sea lion' == 'Sea Lion'

def test_round_trip():
    for t in TEXTS + CLASSNAMES:
        assert TOK.decode(TOK.encode(t)) == clean_text(t), t
        assert TOK.decode(TOK(t)[0]) == clean_text(t), t
    assert ''.join(p for p, _ in split_words('a.b-c')) == 'a.b-c'

def test_round_trip_fuzz():
    import random
    rng = random.Random(0)
    alphabet = list('abcxyz AZ09_.,-\'"!?()<>/') + ['</w>', '\t', '\n', '\u00a0', '\u2028', '\x1c', '\x00', 'é', 'e\u0301', 'İ', 'ß',
                                                    '²', '٣', '中文', '🦓', '\ufffd', '\U0001F600\u200d']
    for _ in range(2000):
        t = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert TOK.decode(TOK.encode(t)) == clean_text(t), repr(t)

def test_special_ids_and_open_clip_layout():
    assert TOK.pad_token_id == 0 and TOK.eot_token_id == TOK.vocab_size - 1 and TOK.sot_token_id == TOK.vocab_size - 2
    ids = TOK(['a photo of a circle.', 'a dodecahedron'])
    assert ids.dtype == torch.long and ids.shape == (2, 77) and TOK.context_length == 77
    assert (ids[:, 0] == TOK.sot_token_id).all()
    n = len(TOK.encode('a photo of a circle.'))
    assert ids[0].argmax().item() == n + 1 and ids[0, n + 1] == TOK.eot_token_id and (ids[0, n + 2:] == 0).all()
    assert TOK('x').shape == (1, 77) and TOK(['a', 'b'], context_length=8).shape == (2, 8)

def test_truncation_keeps_end_token():
    long = ' '.join(['dodecahedron']*20)
    row = TOK(long, context_length=10)[0].tolist()
    assert row[0] == TOK.sot_token_id and row[-1] == TOK.eot_token_id and row[1:-1] == TOK.encode(long)[:8]
    assert TOK(long)[0, -1] == TOK.eot_token_id and TOK(long)[0].argmax() == 76
    with pytest.raises(ValueError): TOK('a', context_length=1)

def test_json_round_trip_and_fingerprint():
    tok2 = MiniBPE.from_json(TOK.to_json())
    assert tok2.merges == TOK.merges and tok2.words == TOK.words and tok2.fingerprint() == TOK.fingerprint()
    assert tok2.encode(TEXTS[2]) == TOK.encode(TEXTS[2])
    assert MiniBPE(MINI_BPE_MERGES[:-1]).fingerprint() != TOK.fingerprint()

def test_trainer_is_deterministic_and_complete():
    counts = {('lower', True): 5, ('lowest', True): 2, ('newer', False): 6, ('wider', True): 3}
    m = train_bpe(counts)
    assert m == train_bpe(dict(reversed(list(counts.items()))))
    tok = MiniBPE(m, [p for p, _ in counts])
    assert all(len(tok.bpe(p, f)) == 1 for p, f in counts)

def test_shipped_weights_match_the_tokenizer(tmp_path):  # the notebook checks the refusal; here: the header's tokenizer
    from safetensors.torch import load_file
    from clip_strategies.core import save_safetensors
    from clip_strategies.mini import MINI_WEIGHTS, MINI_CONFIG, mini_metadata, load_mini
    meta = mini_metadata(MINI_WEIGHTS)
    assert meta['tokenizer'] == f'mini_bpe/{TOK.fingerprint()}' and MINI_CONFIG['text']['vocab_size'] == TOK.vocab_size
    assert MiniBPE.from_json(meta['tokenizer_json']).fingerprint() == TOK.fingerprint()
    other = tmp_path/'other.safetensors'
    save_safetensors(load_file(str(MINI_WEIGHTS)), other, metadata={**meta, 'tokenizer': 'mini_bpe/0000000000000000'})
    with pytest.raises(ValueError, match='another tokenizer'): load_mini('cpu', path=other)
