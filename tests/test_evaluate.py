"""The evaluation settings and the group metric against NumPy and pytrec_eval, mesh scoring, the
one-stream encoding, and the report files."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import pytrec_eval

from hbt import io
from hbt import sharding
from hbt.data import types
from hbt.eval import encode
from hbt.eval import evaluate
from hbt.eval import metrics
from hbt.eval import report
from hbt.eval import run as eval_run
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib

LANGS = ('en', 'de', 'zh')
GROUPS = (('en', 'zh'), ('de',), ('de', 'en'), LANGS)


def synthetic_benchmark(rng, langs=LANGS, num_ids=30):
  """A small parallel benchmark where 'de' lacks some ids (like MLQA-R)."""
  splits = {}
  for k, lang in enumerate(langs):
    ids = [f'q{i}' for i in range(num_ids) if not (lang == 'de' and i % 4 == 0)]
    num_cands = 40 + 5 * k
    answer = rng.choice(num_cands, size=len(ids), replace=False).astype(np.int32)
    splits[lang] = types.LanguageSplit(
        lang=lang, query_ids=tuple(ids), queries=tuple(f'{lang} question {i}' for i in ids),
        candidates=tuple(f'{lang} sentence {j} ' + 'word ' * (j % 13) for j in range(num_cands)),
        contexts=np.zeros(num_cands, np.int32), paragraphs=('p',), answer=answer)
  return types.Benchmark('synthetic', tuple(langs), splits)


def integer_embeddings(rng, bench, dim=8):
  """Small integer embeddings: every score is exact in float32 and many scores tie."""
  return {l: (rng.integers(-2, 3, size=(len(bench[l].query_ids), dim)).astype(np.float32),
              rng.integers(-2, 3, size=(len(bench[l].candidates), dim)).astype(np.float32))
          for l in bench.langs}


def answers(bench, qid, langs):
  return [bench[l].answer_of(qid) for l in langs]


def numpy_metrics(scores: np.ndarray, relevant: list[int]) -> dict[str, float]:
  """AP, reciprocal rank and the best/worst rank by a stable argsort (ties: lower index first)."""
  order = np.argsort(-scores.astype(np.float64), kind='stable')
  rank_of = np.empty(len(order), np.int64)
  rank_of[order] = np.arange(1, len(order) + 1)
  ranks = np.sort(rank_of[relevant])
  return {'ap': float(np.mean(np.arange(1, len(ranks) + 1) / ranks)), 'mrr': 1.0 / ranks[0],
          'rank_min': float(ranks[0]), 'rank_max': float(ranks[-1])}


def numpy_group(bench, emb, group) -> dict:
  """The group metric computed directly: pairs within the group; multi on the group's sub-pool.

  The sub-pool keeps the pool's (the benchmark's) language order, which decides ties.
  """
  in_pool = [l for l in bench.langs if l in group]
  pool = np.concatenate([emb[l][1] for l in in_pool])
  offsets = dict(zip(in_pool, np.cumsum([0] + [len(bench[l].candidates) for l in in_pool])))
  pairs, multi = {}, {}
  for x in group:
    for y in group:
      rows = [numpy_metrics(emb[x][0][i] @ emb[y][1].T, [bench[y].answer_of(q)])
              for i, q in enumerate(bench[x].query_ids) if bench[y].answer_of(q) is not None]
      pairs[f'{x}-{y}'] = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    rows = []
    for i, q in enumerate(bench[x].query_ids):
      rel = [offsets[y] + a for y, a in zip(in_pool, answers(bench, q, in_pool)) if a is not None]
      rows.append(numpy_metrics(emb[x][0][i] @ pool.T, rel))
    multi[x] = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    multi[x]['rank_distance'] = np.mean([r['rank_max'] - r['rank_min'] for r in rows])
  mean = lambda rows: {k: np.mean([r[k] for r in rows]) for k in rows[0]}
  return {'pairs': pairs, 'multi': multi, 'summary': {
      'mono': mean([pairs[f'{l}-{l}'] for l in group]),
      'cross': mean([pairs[f'{a}-{b}'] for a in group for b in group if a != b]) if len(group) > 1
               else {},
      'multi': mean(list(multi.values()))}}


@pytest.fixture(scope='module')
def case():
  rng = np.random.default_rng(0)
  bench = synthetic_benchmark(rng)
  embeddings = integer_embeddings(rng, bench)
  return bench, embeddings, evaluate.score(bench, embeddings, chunk_size=7, top_k=1000)


def test_pairs_equal_metrics_on_the_pair_matrix(case):
  bench, emb, results = case
  for q in bench.langs:
    for c in bench.langs:
      keep = [i for i, qid in enumerate(bench[q].query_ids) if bench[c].answer_of(qid) is not None]
      rel = np.array([[bench[c].answer_of(bench[q].query_ids[i])] for i in keep], np.int32)
      scores = emb[q][0][keep] @ emb[c][1].T
      expected = metrics.summarize(metrics.metrics_from_scores(scores, rel))
      for key in ('ap', 'recall@1', 'recall@10', 'mrr', 'ndcg@10', 'rank_min'):
        assert results['pairs'][f'{q}-{c}'][key] == pytest.approx(expected[key], abs=1e-6)
      per_query = results['per_query']['pairs'][f'{q}-{c}']
      assert list(per_query['qids']) == [bench[q].query_ids[i] for i in keep]


def test_multilingual_equals_metrics_on_the_pool(case):
  bench, emb, results = case
  pool = np.concatenate([emb[l][1] for l in bench.langs])
  offsets = np.cumsum([0] + [len(bench[l].candidates) for l in bench.langs])
  for q in bench.langs:
    rel = np.full((len(bench[q].query_ids), len(bench.langs)), -1, np.int32)
    for i, qid in enumerate(bench[q].query_ids):
      for j, c in enumerate(bench.langs):
        a = bench[c].answer_of(qid)
        rel[i, j] = -1 if a is None else offsets[j] + a
    expected = metrics.metrics_from_scores(emb[q][0] @ pool.T, rel)
    for key, value in metrics.summarize(expected).items():
      assert results['multi'][q][key] == pytest.approx(value, abs=1e-5), (q, key)
    np.testing.assert_allclose(results['per_query']['multi'][q]['ap'], expected['ap'], atol=1e-6)


@pytest.mark.parametrize('group', GROUPS)
def test_group_metric_against_numpy(case, group):
  bench, emb, results = case
  got = evaluate.group_results(results['per_query'], group)
  expected = numpy_group(bench, emb, group)
  assert got['group_metric'] == evaluate.GROUP_METRIC
  assert sorted(got['pairs']) == sorted(expected['pairs'])
  for name in ('pairs', 'multi'):
    for key, want in expected[name].items():
      for metric, value in want.items():
        assert got[name][key][metric] == pytest.approx(value, abs=1e-6), (name, key, metric)
  for setting, want in expected['summary'].items():
    for metric, value in want.items():
      assert got['summary'][setting][metric] == pytest.approx(value, abs=1e-6), (setting, metric)


def test_group_of_all_languages_is_the_report(case):
  _, _, results = case
  again = evaluate.group_results(results['per_query'], LANGS)
  assert again['summary'] == results['summary'] and again['multi'] == results['multi']
  # The multilingual figures of a sub-group are not those of the full pool.
  sub = evaluate.group_results(results['per_query'], ('en', 'zh'))
  assert sub['multi']['en']['rank_max'] < results['multi']['en']['rank_max']
  with pytest.raises(ValueError, match='subset'):
    evaluate.group_results(results['per_query'], ('en', 'fr'))


@pytest.mark.parametrize('axes,shape', [(('data',), (8,)), (('data', 'fsdp'), (4, 2))])
def test_mesh_scoring_equals_one_device(case, axes, shape):
  bench, emb, results = case
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(shape), axes)
  on_mesh = evaluate.score(bench, emb, mesh=mesh, chunk_size=3, top_k=1000)
  for lang in bench.langs:
    for key in ('answers', 'ahead'):
      np.testing.assert_array_equal(on_mesh['per_query']['queries'][lang][key],
                                    results['per_query']['queries'][lang][key])
    for key in ('values', 'index'):
      np.testing.assert_array_equal(on_mesh['top'][lang][key], results['top'][lang][key])
  assert on_mesh['summary'] == results['summary']


def test_top_candidates_are_the_best(case):
  bench, emb, results = case
  for x in bench.langs:
    for j, y in enumerate(bench.langs):
      scores = emb[x][0] @ emb[y][1].T
      order = np.argsort(-scores, axis=1, kind='stable')
      top = results['top'][x]
      n = len(bench[y].candidates)
      np.testing.assert_array_equal(top['index'][:, j, :n], order)
      assert np.all(top['index'][:, j, n:] == -1)
      np.testing.assert_array_equal(top['values'][:, j, :n],
                                    np.take_along_axis(scores, order, axis=1))


def pytrec(folder, qrels_name, run_name):
  with open(folder / qrels_name) as f:
    qrel = pytrec_eval.parse_qrel(f)
  with open(folder / run_name) as f:
    run = pytrec_eval.parse_run(f)
  return pytrec_eval.RelevanceEvaluator(qrel, {'map', 'recip_rank'}).evaluate(run)


def test_trec_files_give_the_report(case, tmp_path):
  """Every run file has all candidates here (depth 1000 > pool): pytrec_eval == the report."""
  bench, _, results = case
  report.write_trec(tmp_path, results)
  for x in bench.langs:
    for y in bench.langs:
      got = pytrec(tmp_path, f'{y}.qrels', f'{x}-{y}.run')
      per_query = results['per_query']['pairs'][f'{x}-{y}']
      assert sorted(got) == sorted(per_query['qids'])
      ap = np.array([got[q]['map'] for q in per_query['qids']])
      np.testing.assert_allclose(ap, per_query['ap'], atol=1e-6)
      assert np.mean(ap) == pytest.approx(results['pairs'][f'{x}-{y}']['ap'], abs=1e-6)
    got = pytrec(tmp_path, 'multi.qrels', f'multi-{x}.run')
    per_query = results['per_query']['multi'][x]
    ap = np.array([got[q]['map'] for q in per_query['qids']])
    rr = np.array([got[q]['recip_rank'] for q in per_query['qids']])
    np.testing.assert_allclose(ap, per_query['ap'], atol=1e-6)
    np.testing.assert_allclose(rr, per_query['mrr'], atol=1e-6)
    assert np.mean(ap) == pytest.approx(results['multi'][x]['ap'], abs=1e-6)


def test_trec_depth_truncates_the_runs(tmp_path):
  """At depth 20, AP agrees where every answer is in the top 20 and is lower elsewhere."""
  rng = np.random.default_rng(5)
  bench = synthetic_benchmark(rng)
  emb = integer_embeddings(rng, bench)
  results = evaluate.score(bench, emb, top_k=20)
  report.write_trec(tmp_path, results)
  lines = (tmp_path / 'multi-en.run').read_text().splitlines()
  assert len(lines) == 20 * len(bench['en'].query_ids)
  got = pytrec(tmp_path, 'multi.qrels', 'multi-en.run')
  per_query = results['per_query']['multi']['en']
  ap = np.array([got[q]['map'] for q in per_query['qids']])
  inside = per_query['rank_max'] <= 20
  assert 0 < inside.sum() < len(inside)
  np.testing.assert_allclose(ap[inside], per_query['ap'][inside], atol=1e-6)
  assert np.all(ap[~inside] < per_query['ap'][~inside])


def test_perfect_embeddings_score_one():
  rng = np.random.default_rng(1)
  bench = synthetic_benchmark(rng, num_ids=12)
  basis = rng.normal(size=(12, 64))
  basis /= np.linalg.norm(basis, axis=1, keepdims=True)
  emb = {}
  for l in bench.langs:
    split = bench[l]
    cands = rng.normal(size=(len(split.candidates), 64)) * 0.01
    for i, qid in enumerate(split.query_ids):
      cands[split.answer[i]] = basis[int(qid[1:])]
    emb[l] = (basis[[int(q[1:]) for q in split.query_ids]].astype(np.float32),
              cands.astype(np.float32))
  results = evaluate.score(bench, emb)
  assert results['summary']['mono']['ap'] == pytest.approx(1.0)
  assert results['summary']['cross']['recall@1'] == pytest.approx(1.0)
  assert 'top' not in results


def test_report_files(case, tmp_path):
  _, _, results = case
  results = dict(results, benchmark='synthetic', timing={'encode_s': 1.0})
  json_path = eval_run.write_report(tmp_path, results, 'before')
  folder = tmp_path / 'eval'
  saved = json.loads(json_path.read_text())
  assert saved['pairs']['en-de']['ap'] == pytest.approx(results['pairs']['en-de']['ap'])
  assert saved['group_metric'] == evaluate.GROUP_METRIC and 'per_query' not in saved
  assert (folder / 'synthetic_before.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  trec = folder / 'trec' / 'synthetic_before'
  assert sorted(p.name for p in trec.iterdir()) == sorted(
      [f'{x}-{y}.run' for x in LANGS for y in LANGS] + [f'multi-{x}.run' for x in LANGS]
      + [f'{y}.qrels' for y in LANGS] + ['multi.qrels'])
  # The per-query file gives back every figure, for any group.
  per_query = report.read_per_query(folder / 'synthetic_before_per_query.npz')
  for group in GROUPS:
    assert (evaluate.group_results(per_query, group) ==
            evaluate.group_results(results['per_query'], group))
  np.testing.assert_array_equal(per_query['pairs']['en-de']['qids'],
                                results['per_query']['pairs']['en-de']['qids'])
  assert not [p for p in folder.rglob('.*')]  # no temporary files left
  # An evaluation without top candidates and heatmap writes its JSON and per-query file only.
  quiet = {k: v for k, v in results.items() if k not in ('top', 'trec_depth')}
  eval_run.write_report(tmp_path, quiet, 'step5', heatmap=False)
  assert sorted(p.name for p in folder.glob('synthetic_step5*')) == [
      'synthetic_step5.json', 'synthetic_step5_per_query.npz']
  assert not (folder / 'trec' / 'synthetic_step5').exists()
  text = report.table(results['summary'], 'T')
  assert text.splitlines()[0] == 'T' and 'multi' in text and 'rank dist' in text
  assert report.map_matrix(results).shape == (3, 3)
  io.write_json(tmp_path / 'r.json', report.json_results(results))


@dataclasses.dataclass(frozen=True)
class WordTokenizer:
  """Each word -> an id in [3, 50); a kind marker after <s>, like the model's prefixes."""

  max_length: int = 38
  pad_id: int = 1

  def encode(self, texts, kind):
    marker = 3 if kind == 'query' else 4
    return [tokenizer_lib.truncate(np.asarray(
        [0, marker] + [5 + sum(map(ord, w)) % 45 for w in t.split()] + [2], np.int32),
        self.max_length) for t in texts]


ARCH = encoder.Arch(vocab_size=50, hidden=16, layers=1, heads=2, mlp=32, max_positions=40,
                    type_vocab_size=1, position_offset=2, layer_norm_eps=1e-12, pad_id=1)


@pytest.mark.parametrize('pack_length', [0, 16])
def test_one_stream_equals_per_language_encoding(pack_length):
  bench = synthetic_benchmark(np.random.default_rng(2), num_ids=20)
  module = encoder.Encoder(ARCH)
  tok = WordTokenizer()
  params = module.init(jax.random.key(0), np.zeros((1, 8), np.int32),
                       np.ones((1, 8), np.int32))['params']
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  encode_fn = eval_run.make_encode_fn(module, mesh)
  batch = sharding.batch_sharding(mesh)
  kwargs = dict(batch_tokens=128, pack_length=pack_length, multiple=8, batch_sharding=batch,
                progress=False)
  stream, tokens = evaluate.encode_benchmark(encode_fn, params, tok, bench, **kwargs)
  # One stream: one compiled shape per length bucket, and nothing more on a second call.
  all_ids = [i for l in bench.langs for kind, texts in (('query', bench[l].queries),
                                                         ('passage', bench[l].candidates))
             for i in tok.encode(list(texts), kind)]
  plan = encode.plan_packed(np.array([len(i) for i in all_ids]), 128, tok.max_length,
                            pack_length, 8)
  shapes = {(length, size, num) for length, _, size, num in plan}
  assert any(num for _, _, _, num in plan) == bool(pack_length)
  assert len(shapes) >= 2 and encode_fn._cache_size() == len(shapes)
  again, _ = evaluate.encode_benchmark(encode_fn, params, tok, bench, **kwargs)
  assert encode_fn._cache_size() == len(shapes)
  assert tokens == sum(len(i) for i in all_ids)
  for lang in bench.langs:
    for k, (kind, texts) in enumerate((('query', bench[lang].queries),
                                       ('passage', bench[lang].candidates))):
      alone = encode.encode_texts(encode_fn, params, tok.encode(list(texts), kind), tok.pad_id,
                                  batch_tokens=128, max_length=tok.max_length, multiple=8,
                                  batch_sharding=batch, progress=False)
      assert stream[lang][k].shape == (len(texts), ARCH.hidden)
      np.testing.assert_allclose(stream[lang][k], alone, atol=2e-6)
      np.testing.assert_array_equal(again[lang][k], stream[lang][k])


def test_trec_scores_keep_every_float32_order_and_tie():
  """format_scores' text reads back as the same float32 (so trec_eval sees the same order and
  ties): random magnitudes over the whole float32 range, neighbours of powers of ten, subnormals,
  signed zeros, and adjacent float32 values."""
  rng = np.random.default_rng(0)
  x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-44, 38, 20000)).astype(np.float32)
  tens = np.float32(10.0) ** np.arange(-37, 38, dtype=np.float32)
  special = np.concatenate([
      tens, np.nextafter(tens, np.float32(0)), np.nextafter(tens, np.float32(np.inf)),
      np.float32([0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, 0.5, 0.99999994, 1.0000001, -1.0])])
  x = np.concatenate([x[np.isfinite(x)], special, -special]).astype(np.float32)
  text = report.format_scores(x).tobytes().decode()
  assert len(text) == 15 * len(x)
  back = np.array([float(text[15 * i:15 * (i + 1)]) for i in range(len(x))])
  np.testing.assert_array_equal(back.astype(np.float32), x)
  assert text[:15] == format(float(x[0]), ' .8e')  # printf's '% .8e'
