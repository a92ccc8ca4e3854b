"""The three evaluation settings against explicit score matrices, and the report files."""

import json

import numpy as np
import pytest

from hbt import io
from hbt.data import types
from hbt.eval import evaluate
from hbt.eval import metrics
from hbt.eval import report


def synthetic_benchmark(rng, langs=('en', 'de', 'zh'), num_ids=30):
  """A small parallel benchmark where 'de' lacks some ids (like MLQA-R)."""
  splits = {}
  for k, lang in enumerate(langs):
    ids = [f'q{i}' for i in range(num_ids) if not (lang == 'de' and i % 4 == 0)]
    num_cands = 40 + 5 * k
    answer = rng.choice(num_cands, size=len(ids), replace=False).astype(np.int32)
    splits[lang] = types.LanguageSplit(
        lang=lang, query_ids=tuple(ids), queries=tuple(f'{lang} question {i}' for i in ids),
        candidates=tuple(f'{lang} sentence {j}' for j in range(num_cands)),
        contexts=np.zeros(num_cands, np.int32), paragraphs=('p',), answer=answer)
  return types.Benchmark('synthetic', tuple(langs), splits)


def unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope='module')
def case():
  rng = np.random.default_rng(0)
  bench = synthetic_benchmark(rng)
  embeddings = {l: (unit(rng.normal(size=(len(bench[l].query_ids), 16))),
                    unit(rng.normal(size=(len(bench[l].candidates), 16)))) for l in bench.langs}
  return bench, embeddings, evaluate.score(bench, embeddings, chunk_size=7)


def test_pairs_equal_metrics_on_the_pair_matrix(case):
  bench, emb, results = case
  for q in bench.langs:
    for c in bench.langs:
      keep = [i for i, qid in enumerate(bench[q].query_ids) if bench[c].answer_of(qid) is not None]
      rel = np.array([[bench[c].answer_of(bench[q].query_ids[i])] for i in keep], np.int32)
      scores = emb[q][0][keep] @ emb[c][1].T
      expected = metrics.summarize(metrics.metrics_from_scores(scores, rel))
      for key in ('ap', 'recall@1', 'recall@10', 'mrr', 'ndcg@10'):
        assert results['pairs'][f'{q}-{c}'][key] == pytest.approx(expected[key], abs=1e-6)


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
    expected = metrics.summarize(metrics.metrics_from_scores(emb[q][0] @ pool.T, rel))
    for key, value in expected.items():
      assert results['multi'][q][key] == pytest.approx(value, abs=1e-5), (q, key)


def test_settings_are_macro_averages(case):
  bench, _, results = case
  langs = bench.langs
  s = results['summary']
  assert s['mono']['ap'] == pytest.approx(np.mean([results['pairs'][f'{l}-{l}']['ap']
                                                   for l in langs]))
  cross = [results['pairs'][f'{a}-{b}']['ap'] for a in langs for b in langs if a != b]
  assert len(cross) == 6 and s['cross']['ap'] == pytest.approx(np.mean(cross))
  assert s['multi']['rank_distance'] == pytest.approx(
      np.mean([results['multi'][l]['rank_distance'] for l in langs]))
  sub = evaluate.summarize_settings(results['pairs'], results['multi'], ['en', 'zh'])
  assert sub['cross']['ap'] == pytest.approx(np.mean([results['pairs']['en-zh']['ap'],
                                                      results['pairs']['zh-en']['ap']]))


def test_perfect_embeddings_score_one():
  rng = np.random.default_rng(1)
  bench = synthetic_benchmark(rng, num_ids=12)
  basis = unit(rng.normal(size=(12, 64)))
  emb = {}
  for l in bench.langs:
    split = bench[l]
    cands = unit(rng.normal(size=(len(split.candidates), 64))) * 0.01
    for i, qid in enumerate(split.query_ids):
      cands[split.answer[i]] = basis[int(qid[1:])]
    emb[l] = (basis[[int(q[1:]) for q in split.query_ids]], unit(cands))
  results = evaluate.score(bench, emb)
  assert results['summary']['mono']['ap'] == pytest.approx(1.0)
  assert results['summary']['cross']['recall@1'] == pytest.approx(1.0)


def test_report_files(case, tmp_path):
  _, _, results = case
  results = dict(results, benchmark='synthetic')
  io.write_json(tmp_path / 'eval' / 'r.json', results)
  report.write_heatmap(tmp_path / 'eval' / 'r.png', results, 'title')
  assert json.loads((tmp_path / 'eval' / 'r.json').read_text())['pairs']['en-de']['ap'] == \
      pytest.approx(results['pairs']['en-de']['ap'])
  assert (tmp_path / 'eval' / 'r.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert sorted(p.name for p in (tmp_path / 'eval').iterdir()) == ['r.json', 'r.png']
  text = report.table(results['summary'], 'T')
  assert text.splitlines()[0] == 'T' and 'multi' in text and 'rank dist' in text
  assert report.map_matrix(results).shape == (3, 3)
