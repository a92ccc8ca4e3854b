"""Tests of language clusters (issue 7 §2): the cluster sampler's pair distribution, the tables and
spec strings, and clustering from embeddings."""

import collections

import numpy as np
import pytest
from scipy import stats

from hbt.batches import clusters as clusters_lib
from hbt.batches import sampler as sampler_lib
from tests.test_sampler import _batches, _pairs

LANGS = ('ar', 'de', 'en', 'es', 'ru', 'zh')
SPEC = 'latin:de,en,es;east:ru,zh;semitic:ar'  # 3 clusters: one of three, one of two, one of one


def _toy(ids=300):
  return _pairs({lang: list(range(ids)) for lang in LANGS})


def _cross_pairs(sampler, n):
  """Counter of (query, positive) language pairs over n batches."""
  return collections.Counter(pair for b in _batches(sampler, n) if b.kind == 'cross'
                             for pair in zip(b.query_langs, b.positive_langs))


@pytest.mark.parametrize('p_in', [0.8, 0.3])
def test_cluster_pairs_match_their_specification(p_in):
  clusters = clusters_lib.parse(SPEC)
  sampler = sampler_lib.Sampler(_toy(), 16, 'x_y', seed=3, lang_clusters=clusters,
                                cluster_p_in=p_in)
  counts = _cross_pairs(sampler, 1500)
  ordered = [(a, b) for a in LANGS for b in LANGS if a != b]
  within = [(a, b) for a, b in ordered if clusters[a] == clusters[b]]
  across = [(a, b) for a, b in ordered if clusters[a] != clusters[b]]
  assert len(within) == 8 and len(across) == 22
  # The specification, written out independently: p_in uniform over within, the rest over across.
  expected = {pair: p_in / len(within) for pair in within}
  expected.update({pair: (1 - p_in) / len(across) for pair in across})
  total = sum(counts.values())
  assert set(counts) == set(expected)
  observed = [counts[pair] for pair in ordered]
  assert stats.chisquare(observed, [expected[pair] * total for pair in ordered]).pvalue > 0.001
  share_in = sum(counts[pair] for pair in within) / total
  assert abs(share_in - p_in) < 0.01
  # The uniform sampler (no clusters) fails this test: within pairs are 8 of 30 ordered pairs.
  plain = _cross_pairs(sampler_lib.Sampler(_toy(), 16, 'x_y', seed=3), 1500)
  assert abs(sum(plain[pair] for pair in within) / sum(plain.values()) - 8 / 30) < 0.01
  assert stats.chisquare([plain[pair] for pair in ordered],
                         [expected[pair] * total for pair in ordered]).pvalue < 1e-6


def test_hybrid_with_clusters_keeps_mono_batches_and_alpha():
  sampler = sampler_lib.Sampler(_toy(), 16, 'hybrid', alpha=0.5, seed=0,
                                lang_clusters=clusters_lib.parse(SPEC), cluster_p_in=1.0)
  batches = _batches(sampler, 600)
  kinds = collections.Counter(b.kind for b in batches)
  assert abs(kinds['mono'] / 600 - 0.5) < 0.07
  clusters = clusters_lib.parse(SPEC)
  for b in batches:
    assert len(set(b.ids)) == 16
    if b.kind == 'cross':
      assert all(q != p and clusters[q] == clusters[p]
                 for q, p in zip(b.query_langs, b.positive_langs))


def test_p_in_zero_draws_only_across():
  clusters = clusters_lib.parse(SPEC)
  sampler = sampler_lib.Sampler(_toy(), 16, 'x_y', seed=1, lang_clusters=clusters,
                                cluster_p_in=0.0)
  counts = _cross_pairs(sampler, 200)
  assert all(clusters[q] != clusters[p] for q, p in counts)


def test_cluster_errors_name_the_argument():
  pairs = _toy()
  with pytest.raises(ValueError, match=r"lang_clusters has no cluster for languages \['ru', 'zh'\]"):
    sampler_lib.Sampler(pairs, 8, 'x_y', lang_clusters=clusters_lib.parse('a:ar,de,en,es'))
  singletons = {lang: lang for lang in LANGS}  # every cluster has one language: no within pair
  with pytest.raises(ValueError, match='lang_clusters: no two languages within clusters'):
    sampler_lib.Sampler(pairs, 8, 'x_y', lang_clusters=singletons)
  sampler_lib.Sampler(pairs, 8, 'x_y', lang_clusters=singletons, cluster_p_in=0.0)  # fine
  one = {lang: 'all' for lang in LANGS}
  with pytest.raises(ValueError, match='lang_clusters: no two languages across clusters'):
    sampler_lib.Sampler(pairs, 8, 'x_y', lang_clusters=one)
  with pytest.raises(ValueError, match='lang_clusters needs pair_sampling'):
    sampler_lib.Sampler(pairs, 8, 'x_y', pair_sampling='id_first', lang_clusters=one)
  with pytest.raises(ValueError, match='cluster_p_in must be'):
    sampler_lib.Sampler(pairs, 8, 'x_y', lang_clusters=one, cluster_p_in=1.5)
  # Within pairs that share no id count as absent: de and en never share an id here.
  split = _pairs({'de': list(range(50)), 'en': list(range(50, 100)), 'zh': list(range(100))})
  with pytest.raises(ValueError, match='no two languages within clusters share an id'):
    sampler_lib.Sampler(split, 8, 'x_y', lang_clusters={'de': 'l', 'en': 'l', 'zh': 'h'})


def test_tables_and_specs():
  langs = set('ar de el en es hi ro ru th tr vi zh'.split())
  for name in clusters_lib.TABLES:
    assert set(clusters_lib.parse(name)) == langs
  assert clusters_lib.parse('script')['vi'] == clusters_lib.parse('script')['en'] == 'latin'
  assert clusters_lib.parse('family')['hi'] == clusters_lib.parse('family')['en']
  assert clusters_lib.parse('family')['tr'] != clusters_lib.parse('family')['en']
  parsed = clusters_lib.parse(' b : en, de ;a:zh')
  assert parsed == {'en': 'b', 'de': 'b', 'zh': 'a'}
  assert clusters_lib.format_spec(parsed) == 'a:zh;b:de,en'
  assert clusters_lib.parse(clusters_lib.format_spec(parsed)) == parsed
  for bad in ('', 'latin', 'a:en;a:de', 'a:en;b:en', 'a:'):
    with pytest.raises(ValueError, match='lang_clusters'):
      clusters_lib.parse(bad)


def test_from_embeddings_recovers_known_groups():
  rng = np.random.default_rng(0)
  n, d = 40, 16
  sentences = rng.normal(size=(n, d))  # what the parallel sentences share
  groups = {'g0': ('de', 'en', 'es'), 'g1': ('ru', 'uk'), 'g2': ('th',)}
  offsets = {g: 3.0 * rng.normal(size=d) for g in groups}  # a direction per language group
  embeddings = {lang: sentences + offsets[g] + 0.3 * rng.normal(size=d)
                + 0.1 * rng.normal(size=(n, d))
                for g, langs in groups.items() for lang in langs}
  got = clusters_lib.from_embeddings(embeddings, num_clusters=3)
  by_cluster = collections.defaultdict(set)
  for lang, name in got.items():
    by_cluster[name].add(lang)
  assert sorted(map(sorted, by_cluster.values())) == sorted(map(sorted, groups.values()))
  assert got['de'] == 'c0'  # numbered by first language in sorted order
  assert set(clusters_lib.from_embeddings(embeddings, num_clusters=1).values()) == {'c0'}
  assert len(set(clusters_lib.from_embeddings(embeddings, num_clusters=6).values())) == 6
  with pytest.raises(ValueError, match='num_clusters'):
    clusters_lib.from_embeddings(embeddings, num_clusters=0)
  with pytest.raises(ValueError, match='one shape'):
    clusters_lib.from_embeddings({'en': np.ones((4, 3)), 'de': np.ones((5, 3))}, 2)


def test_config_reaches_the_sampler_and_the_shard_hash():
  from configs import default  # pylint: disable=import-outside-toplevel
  from hbt.train import loop  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  plain = loop.shard_fields(config)
  assert 'lang_clusters' not in plain  # runs without clusters keep their shard names
  config.train.lang_clusters = ' latin : en,de,es ;east:zh,ru;semitic:ar'
  config.train.cluster_p_in = 0.9
  fields = loop.shard_fields(config)
  assert fields['lang_clusters'] == 'east:ru,zh;latin:de,en,es;semitic:ar'  # normalised
  assert fields['cluster_p_in'] == 0.9
  sampler = loop.make_sampler(config, _toy())
  assert sampler.lang_clusters == clusters_lib.parse(SPEC) and sampler.cluster_p_in == 0.9


def test_the_clusters_sweep_is_valid_and_fair():
  from hbt.experiments import sweep as sweep_lib  # pylint: disable=import-outside-toplevel
  spec = sweep_lib.load_sweep('configs/sweeps/clusters.py')
  trained = [r for r in sweep_lib.runs(spec) if r['arm'] != sweep_lib.ZERO_SHOT]
  assert len(trained) == 4 * 3
  assert {(r['overrides']['train.steps'], r['overrides']['train.batch_size'],
           r['overrides']['train.strategy'], r['overrides']['train.alpha']) for r in trained} == {
               (100, 32, 'hybrid', 0.5)}
  assert {r['overrides'].get('train.lang_clusters', '') for r in trained} == {
      '', 'family', 'script', 'model'}
  assert {r['seed'] for r in trained} == {0, 1, 2}


def test_pairwise_similarity_equals_mean_embeddings_when_every_id_is_parallel():
  """On ids that every language has (XQuAD-R), the pairwise clustering is `from_embeddings`."""
  rng = np.random.default_rng(4)
  pairs = _pairs({lang: list(range(12)) for lang in LANGS})
  ids = pairs.all_ids()
  base = rng.normal(size=(len(LANGS), 8))
  vectors = {(lang, i): base[k // 2] + 0.5 * rng.normal(size=8)  # 3 groups of 2 languages
             for k, lang in enumerate(LANGS) for i in ids}
  shared = clusters_lib.shared_ids(pairs, 10)
  assert shared[('ar', 'de')] == ids[:10] and len(shared) == 15
  langs, sim = clusters_lib.similarity(vectors, shared)
  means = {lang: np.mean([vectors[(lang, i)] for i in shared[('ar', 'de')]], axis=0)
           for lang in LANGS}
  want = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in means.values()]
                   for a in means.values()])
  np.testing.assert_allclose(sim, want, atol=1e-12)
  embeddings = {lang: np.stack([vectors[(lang, i)] for i in shared[('ar', 'de')]])
                for lang in LANGS}
  for k in (1, 2, 3, 6):
    assert clusters_lib.from_similarity(langs, sim, k) == clusters_lib.from_embeddings(
        embeddings, k)
  with pytest.raises(ValueError, match='share no parallel id'):
    clusters_lib.similarity(vectors, {('ar', 'de'): ()})


def test_model_clusters_in_the_main_job(tiny_checkpoint, data_dir, tmp_path):
  """lang_clusters='model': the main job computes the clusters from the base model (checked
  against the same model applied one sentence at a time, averaged with NumPy), writes
  clusters.json, and its batches follow them: with cluster_p_in=1 every cross-lingual pair is
  within a cluster."""
  import json  # pylint: disable=import-outside-toplevel
  from hbt.batches import input_pipeline  # pylint: disable=import-outside-toplevel
  from hbt.model import build  # pylint: disable=import-outside-toplevel
  from hbt.train import loop  # pylint: disable=import-outside-toplevel
  from tests import test_train  # pylint: disable=import-outside-toplevel
  config = test_train.tiny_config(tiny_checkpoint, data_dir, 30, **{
      'mode': 'prepare', 'train.strategy': 'x_y', 'train.lang_clusters': 'model',
      'train.cluster_count': 2, 'train.cluster_sentences': 6, 'train.cluster_p_in': 1.0})
  loop.run(config, tmp_path)
  saved = json.loads((tmp_path / loop.CLUSTERS_FILE).read_text())
  assert saved['source'] == 'model' and saved['langs'] == ['de', 'en', 'es']

  model = build.load(config.model)
  train_pairs, _ = loop.training_pairs(config)

  def mean(lang, ids):
    embs = []
    for i in ids:
      ids_ = model.tokenizer.encode([train_pairs.positive(lang, i)], 'passage')[0]
      embs.append(np.asarray(model.module.apply({'params': model.params}, ids_[None],
                                                np.ones_like(ids_)[None]))[0])
    m = np.mean(embs, axis=0)
    return m / np.linalg.norm(m)

  langs = saved['langs']
  want = np.eye(3)
  for a in range(3):
    for b in range(a + 1, 3):
      common = sorted(set(train_pairs.ids[langs[a]]) & set(train_pairs.ids[langs[b]]))[:6]
      assert saved['shared_ids'][f'{langs[a]}-{langs[b]}'] == len(common) == 6
      want[a, b] = want[b, a] = mean(langs[a], common) @ mean(langs[b], common)
  np.testing.assert_allclose(saved['similarity'], want, atol=1e-5)
  # Three languages in two clusters: the most similar pair is the one cluster of two.
  a, b = divmod(int(np.argmax(np.where(np.eye(3, dtype=bool), -np.inf, want))), 3)
  clusters = saved['clusters']
  assert clusters[langs[a]] == clusters[langs[b]] and len(set(clusters.values())) == 2

  (shard_dir,) = [p.parent for p in (tmp_path / 'shards').glob(f'*/{input_pipeline.MANIFEST}')]
  manifest = input_pipeline.read_manifest(shard_dir)
  assert manifest['fields']['lang_clusters'] == saved['spec']
  drawn = {tuple(k.split('-')) for k in manifest['describe']['lang_pairs']}
  assert drawn == {(langs[a], langs[b]), (langs[b], langs[a])}  # within the cluster only
  # Computed once per run: a restart reads clusters.json back (no mesh needed) when its inputs
  # are the run's.
  other = {lang: 'c0' for lang in langs}
  (tmp_path / loop.CLUSTERS_FILE).write_text(json.dumps({**saved, 'clusters': other}))
  assert loop.lang_clusters(config, model, None, train_pairs, tmp_path) == other
