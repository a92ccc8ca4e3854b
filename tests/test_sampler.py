"""Tests of hbt.batches.sampler: batch kinds, no shared ids, determinism, language frequencies."""

import collections
import importlib.util
import json
import time

import numpy as np
import pytest

from hbt.batches import sampler as sampler_lib
from hbt.data import pairs as pairs_lib

SIZES = {'de': 100, 'en': 400, 'zh': 1600}


def _pairs(coverage: dict[str, list[int]]) -> pairs_lib.PairSet:
  """A PairSet where language L has ids f'id{i}' for i in coverage[L]."""
  rows = [(lang, f'id{i}', pairs_lib.Example(f'{lang} q {i}', f'{lang} p {i}'))
          for lang, numbers in coverage.items() for i in numbers]
  return pairs_lib._build(rows)  # pylint: disable=protected-access


def _uneven() -> pairs_lib.PairSet:
  """Nested coverage: de has ids 0-99, en 0-399, zh 0-1599 (so ids 0-399 are in >= 2 langs)."""
  return _pairs({lang: list(range(n)) for lang, n in SIZES.items()})


def _parallel() -> pairs_lib.PairSet:
  """Five languages, each with all of 300 ids, plus 'it' with half of them."""
  coverage = {lang: list(range(300)) for lang in ('ar', 'de', 'en', 'es', 'hi')}
  coverage['it'] = list(range(0, 300, 2))
  return _pairs(coverage)


def _batches(sampler, n, start=0):
  return [sampler.batch(step) for step in range(start, start + n)]


@pytest.mark.parametrize('alpha', [0.5, 0.3])
def test_hybrid_mono_fraction_follows_alpha(alpha):
  batches = _batches(sampler_lib.Sampler(_parallel(), 16, 'hybrid', alpha=alpha, seed=1), 2000)
  kinds = collections.Counter(b.kind for b in batches)
  assert set(kinds) == {'mono', 'cross'}
  assert abs(kinds['mono'] / 2000 - alpha) < 0.03


@pytest.mark.parametrize('strategy', sampler_lib.STRATEGIES)
def test_batches_are_well_formed(strategy):
  pairs = _parallel()
  sampler = sampler_lib.Sampler(pairs, 32, strategy, alpha=0.5, seed=7)
  for step, batch in enumerate(_batches(sampler, 300)):
    assert batch.step == step
    assert len(batch) == len(batch.query_langs) == len(batch.positive_langs) == 32
    assert len(set(batch.ids)) == 32, 'a parallel id appears twice in one batch'
    for qid, q, p in zip(batch.ids, batch.query_langs, batch.positive_langs):
      assert (q, qid) in pairs.examples and (p, qid) in pairs.examples
    if batch.kind == 'mono':
      assert len(set(batch.query_langs)) == 1 and batch.query_langs == batch.positive_langs
    elif batch.kind == 'cross':
      assert all(q != p for q, p in zip(batch.query_langs, batch.positive_langs))
    else:
      assert batch.kind == 'mixed' and batch.query_langs == batch.positive_langs
  kinds = {b.kind for b in _batches(sampler, 300)}
  expected = {'hybrid': {'mono', 'cross'}, 'x_x_mono': {'mono'}, 'x_y': {'cross'},
              'x_x': {'mixed'}, 'en_en': {'mono'}}[strategy]
  assert kinds == expected


def test_x_x_mono_uses_every_language_and_x_x_mixes_within_batches():
  pairs = _parallel()
  mono = _batches(sampler_lib.Sampler(pairs, 16, 'x_x_mono'), 300)
  assert {b.query_langs[0] for b in mono} == set(pairs.langs)
  mixed = _batches(sampler_lib.Sampler(pairs, 16, 'x_x'), 50)
  assert all(len(set(b.query_langs)) > 1 for b in mixed)


def test_en_en_is_english_only():
  batches = _batches(sampler_lib.Sampler(_uneven(), 64, 'en_en', lang_sampling='size'), 200)
  assert all(set(b.query_langs) == set(b.positive_langs) == {'en'} for b in batches)
  with pytest.raises(ValueError, match="needs language 'en'"):
    sampler_lib.Sampler(_pairs({'de': list(range(10))}), 4, 'en_en')


def test_cross_batches_only_use_ids_in_two_languages():
  pairs = _uneven()
  batches = _batches(sampler_lib.Sampler(pairs, 64, 'x_y', seed=2), 200)
  assert all(int(qid[2:]) < 400 for b in batches for qid in b.ids)
  # id0-99 are in de, en and zh; id100-399 only in en and zh.
  for b in batches:
    for qid, q, p in zip(b.ids, b.query_langs, b.positive_langs):
      if int(qid[2:]) >= 100:
        assert {q, p} == {'en', 'zh'}


def test_same_seed_same_batches_other_seed_other_batches():
  pairs = _parallel()
  first = _batches(sampler_lib.Sampler(pairs, 32, 'hybrid', seed=5), 50)
  again = _batches(sampler_lib.Sampler(pairs, 32, 'hybrid', seed=5), 50)
  other = _batches(sampler_lib.Sampler(pairs, 32, 'hybrid', seed=6), 50)
  assert first == again
  assert all(a.ids != b.ids for a, b in zip(first, other))


@pytest.mark.parametrize('strategy', sampler_lib.STRATEGIES)
def test_restart_at_step_k_gives_the_same_batches(strategy):
  pairs = _parallel()
  uninterrupted = _batches(sampler_lib.Sampler(pairs, 32, strategy, seed=11), 40)
  restarted = _batches(sampler_lib.Sampler(pairs, 32, strategy, seed=11), 15, start=25)
  assert restarted == uninterrupted[25:]
  # Order of drawing does not matter either.
  sampler = sampler_lib.Sampler(pairs, 32, strategy, seed=11)
  assert [sampler.batch(s) for s in reversed(range(40))] == uninterrupted[::-1]


def test_batches_do_not_depend_on_source_order():
  coverage = {'en': list(range(50)), 'de': list(range(0, 50, 2))}
  forward = _pairs(coverage)
  backward = _pairs({lang: numbers[::-1] for lang, numbers in reversed(coverage.items())})
  a = _batches(sampler_lib.Sampler(forward, 8, 'hybrid', seed=3), 30)
  b = _batches(sampler_lib.Sampler(backward, 8, 'hybrid', seed=3), 30)
  assert a == b


@pytest.mark.parametrize('lang_sampling, temperature', [
    ('uniform', 0.3), ('size', 0.3), ('temperature', 0.5), ('temperature', 0.0)])
def test_mono_language_frequencies(lang_sampling, temperature):
  sampler = sampler_lib.Sampler(_uneven(), 50, 'x_x_mono', lang_sampling=lang_sampling,
                                temperature=temperature, seed=4)
  counts = sampler_lib.describe(_batches(sampler, 2000))['mono_batch_langs']
  sizes = np.array([SIZES[lang] for lang in sorted(SIZES)], dtype=float)
  weights = {'uniform': np.ones(3), 'size': sizes}.get(lang_sampling, sizes**temperature)
  expected = weights / weights.sum()
  observed = np.array([counts.get(lang, 0) for lang in sorted(SIZES)]) / 2000
  np.testing.assert_allclose(observed, expected, atol=0.03)


def test_per_pair_language_frequencies():
  # Ids 0-199 are in all three languages; en also has 400 ids of its own (size 600 vs 200).
  pairs = _pairs({'de': list(range(200)), 'en': list(range(200)) + list(range(1000, 1400)),
                  'zh': list(range(200))})
  sampler = sampler_lib.Sampler(pairs, 100, 'x_x', lang_sampling='size', seed=9,
                                pair_sampling='id_first')
  counts = collections.Counter()
  for b in _batches(sampler, 300):
    counts.update(lang for qid, lang in zip(b.ids, b.query_langs) if int(qid[2:]) < 200)
  total = sum(counts.values())
  # For the shared ids: weights 200 : 600 : 200.
  np.testing.assert_allclose([counts['de'] / total, counts['en'] / total, counts['zh'] / total],
                             [0.2, 0.6, 0.2], atol=0.03)
  # Cross, uniform: all six ordered pairs equally often.
  cross = sampler_lib.Sampler(_pairs({lang: list(range(200)) for lang in ('de', 'en', 'zh')}),
                              100, 'x_y', seed=9)
  lang_pairs = sampler_lib.describe(_batches(cross, 300))['lang_pairs']
  assert len(lang_pairs) == 6
  np.testing.assert_allclose(np.array(list(lang_pairs.values())) / 30000, 1 / 6, atol=0.02)


def _mlqa_like(seed=0) -> pairs_lib.PairSet:
  """MLQA-R's shape: 1,200 ids, each in English plus 1 to 3 of six other languages."""
  rng = np.random.default_rng(seed)
  others = ('ar', 'de', 'es', 'hi', 'vi', 'zh')
  coverage = {lang: [] for lang in ('en',) + others}
  for i in range(1200):
    coverage['en'].append(i)
    for lang in rng.choice(others, size=rng.integers(1, 4), replace=False):
      coverage[lang].append(i)
  return _pairs(coverage)


def _english_share(lang_pairs: dict) -> float:
  return sum(n for k, n in lang_pairs.items() if 'en' in k.split('-')) / sum(lang_pairs.values())


def test_pair_first_is_uniform_over_ordered_language_pairs():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  pairs = _mlqa_like()
  sampler = sampler_lib.Sampler(pairs, 32, 'x_y', seed=0)
  assert sampler.pair_sampling == 'pair_first'  # the default
  batches = _batches(sampler, 400)
  for batch in batches:
    assert len(set(batch.ids)) == 32
    for qid, q, p in zip(batch.ids, batch.query_langs, batch.positive_langs):
      assert q != p and (q, qid) in pairs.examples and (p, qid) in pairs.examples
  counts = sampler_lib.describe(batches)['lang_pairs']
  assert len(counts) == 42
  assert stats.chisquare(list(counts.values())).pvalue > 0.001
  assert abs(_english_share(counts) - 12 / 42) < 0.02
  # x_x: one language per pair, uniform over the seven.
  mixed = sampler_lib.describe(_batches(sampler_lib.Sampler(pairs, 32, 'x_x', seed=0), 400))
  assert stats.chisquare(list(mixed['query_langs'].values())).pvalue > 0.001
  # The old per-id sampling is still there, and follows id coverage: mostly English.
  by_id = sampler_lib.Sampler(pairs, 32, 'x_y', seed=0, pair_sampling='id_first')
  old = sampler_lib.describe(_batches(by_id, 400))['lang_pairs']
  assert _english_share(old) > 0.45
  assert stats.chisquare(list(old.values())).pvalue < 1e-6


def test_pair_first_fills_a_batch_when_a_pair_runs_out():
  # de-zh share only 3 ids; batches of 60 of 60 cross ids draw some pairs dry.
  pairs = _pairs({'en': list(range(60)), 'de': list(range(30)), 'zh': list(range(27, 60))})
  sampler = sampler_lib.Sampler(pairs, 60, 'x_y', seed=1)
  for batch in _batches(sampler, 20):
    assert sorted(batch.ids) == sorted(pairs.all_ids())
    for qid, q, p in zip(batch.ids, batch.query_langs, batch.positive_langs):
      assert q != p and (q, qid) in pairs.examples and (p, qid) in pairs.examples


def test_describe():
  sampler = sampler_lib.Sampler(_parallel(), 10, 'hybrid', alpha=0.5, seed=0)
  batches = _batches(sampler, 100)
  summary = sampler_lib.describe(batches)
  json.dumps(summary)
  assert summary['num_batches'] == 100 and summary['num_pairs'] == 1000
  assert sum(summary['kinds'].values()) == 100
  assert sum(summary['mono_batch_langs'].values()) == summary['kinds']['mono']
  assert sum(summary['query_langs'].values()) == sum(summary['positive_langs'].values()) == 1000
  assert sum(summary['lang_pairs'].values()) == 1000
  same = sum(n for k, n in summary['lang_pairs'].items() if k[:2] == k[3:])
  assert same == 10 * summary['kinds']['mono']
  assert sampler_lib.describe([])['num_batches'] == 0


def test_steps_per_epoch():
  pairs = _uneven()
  assert sampler_lib.Sampler(pairs, 100, 'x_x').steps_per_epoch == 16
  assert sampler_lib.Sampler(pairs, 100, 'x_y').steps_per_epoch == 4
  assert sampler_lib.Sampler(pairs, 100, 'en_en').steps_per_epoch == 4
  assert sampler_lib.Sampler(pairs, 100, 'hybrid', alpha=0.0).steps_per_epoch == 4
  assert sampler_lib.Sampler(pairs, 100, 'hybrid').steps_per_epoch == 16
  assert sampler_lib.Sampler(pairs, 100, 'x_x_mono').steps_per_epoch == 16
  assert sampler_lib.Sampler(pairs, 399, 'x_y').steps_per_epoch == 1


@pytest.mark.parametrize('kwargs, message', [
    ({'strategy': 'x_z'}, 'strategy must be one of'),
    ({'alpha': 1.5}, 'alpha must be'),
    ({'alpha': -0.1}, 'alpha must be'),
    ({'alpha': 'half'}, 'alpha must be'),
    ({'lang_sampling': 'zipf'}, 'lang_sampling must be one of'),
    ({'temperature': -1.0}, 'temperature must be'),
    ({'temperature': float('nan')}, 'temperature must be'),
    ({'batch_size': 0}, 'batch_size must be a positive integer'),
    ({'batch_size': 2.5}, 'batch_size must be a positive integer'),
    ({'seed': -1}, 'seed must be'),
    ({'pair_sampling': 'pairs'}, 'pair_sampling must be one of'),
])
def test_bad_arguments(kwargs, message):
  args = {'batch_size': 8, 'strategy': 'hybrid', 'alpha': 0.5, 'lang_sampling': 'uniform',
          'temperature': 0.3, 'seed': 0}
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    sampler_lib.Sampler(_uneven(), **args)


def test_batch_size_too_large_names_language_and_counts():
  pairs = _uneven()
  with pytest.raises(ValueError, match=r"batch_size 101 .* 100 ids of language 'de'"):
    sampler_lib.Sampler(pairs, 101, 'x_x_mono')
  with pytest.raises(ValueError, match=r"batch_size 101 .* 100 ids of language 'de'"):
    sampler_lib.Sampler(pairs, 101, 'hybrid', alpha=0.1)
  with pytest.raises(ValueError, match='batch_size 401 .* 400 ids present in at least two'):
    sampler_lib.Sampler(pairs, 401, 'x_y')
  with pytest.raises(ValueError, match='batch_size 1601 .* 1600 distinct ids'):
    sampler_lib.Sampler(pairs, 1601, 'x_x')
  # Only the kinds a strategy can draw are checked.
  sampler_lib.Sampler(pairs, 400, 'hybrid', alpha=0.0)
  sampler_lib.Sampler(pairs, 400, 'en_en')
  sampler_lib.Sampler(pairs, 1600, 'x_x')
  with pytest.raises(ValueError, match='step must be'):
    sampler_lib.Sampler(pairs, 10, 'x_x').batch(-1)


def test_batch_texts():
  pairs = _parallel()
  batch = sampler_lib.Sampler(pairs, 8, 'x_y').batch(0)
  queries, positives = sampler_lib.batch_texts(pairs, batch)
  for qid, q, p, query, positive in zip(batch.ids, batch.query_langs, batch.positive_langs,
                                         queries, positives):
    assert query == f'{q} q {qid[2:]}' and positive == f'{p} p {qid[2:]}'


def test_batch_is_fast():
  langs = ('ar', 'de', 'el', 'en', 'es', 'hi', 'ru', 'th', 'tr', 'vi', 'zh')
  pairs = _pairs({lang: list(range(1190)) for lang in langs})
  sampler = sampler_lib.Sampler(pairs, 256, 'hybrid', lang_sampling='temperature')
  sampler.batch(0)
  start = time.perf_counter()
  _batches(sampler, 200)
  assert (time.perf_counter() - start) / 200 < 0.005  # About 0.2 ms here; loose for busy CI.


def test_sampler_on_real_mlqa_r(data_dir):
  if importlib.util.find_spec('hbt.data.squad_r') is None:
    pytest.skip('hbt.data.squad_r not available yet')
  from hbt.data import squad_r  # pylint: disable=import-outside-toplevel
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('mlqa_r', data_dir))
  with pytest.raises(ValueError, match="500 ids of language 'es'"):
    sampler_lib.Sampler(pairs, 501, 'hybrid')
  sampler = sampler_lib.Sampler(pairs, 256, 'hybrid', alpha=0.5, seed=0)
  for batch in _batches(sampler, 50):
    assert len(set(batch.ids)) == 256
    for qid, q, p in zip(batch.ids, batch.query_langs, batch.positive_langs):
      assert (q, qid) in pairs.examples and (p, qid) in pairs.examples
      assert (q != p) == (batch.kind == 'cross')


@pytest.mark.parametrize('field,value', [
    ('train.alpha', 0.2), ('train.strategy', 'x_x'), ('train.batch_size', 12), ('seed', 5),
    ('train.lang_sampling', 'size'), ('train.lang_temperature', 0.9),
    ('train.pair_sampling', 'id_first')])
def test_every_sampler_field_of_the_config_reaches_the_sampler(field, value):
  """loop.make_sampler passes each config field on: a run at alpha 0.3 trains at alpha 0.3."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from hbt.train import loop  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  config.train.lang_sampling = 'temperature'  # so that lang_temperature matters
  config.train.lang_temperature = 0.3
  pairs = _uneven()
  before = _batches(loop.make_sampler(config, pairs), 40)
  node, key = (config, field) if '.' not in field else (config.train, field.split('.')[1])
  setattr(node, key, value)
  t = config.train
  expected = sampler_lib.Sampler(pairs, t.batch_size, t.strategy, t.alpha, t.lang_sampling,
                                 t.lang_temperature, config.seed, t.pair_sampling)
  after = _batches(loop.make_sampler(config, pairs), 40)
  assert after == _batches(expected, 40)
  assert after != before  # the field changed the batches
