"""Tests of hbt.eval.metrics against pytrec_eval and NumPy references."""

import jax
import numpy as np
import pytest
import pytrec_eval

from hbt.eval import metrics

TREC_NAMES = metrics.TREC_EVAL_NAMES
TREC_MEASURES = set(TREC_NAMES.values())


def random_relevant(rng: np.random.Generator, num_queries: int, num_candidates: int,
                    max_relevant: int) -> np.ndarray:
  """int32 [Q, max_relevant]: 1..5 distinct relevant per query (every 7th: max_relevant), -1 pad."""
  relevant = np.full((num_queries, max_relevant), -1, np.int32)
  for q in range(num_queries):
    count = max_relevant if q % 7 == 0 else rng.integers(1, min(5, max_relevant) + 1)
    relevant[q, :count] = rng.choice(num_candidates, count, replace=False)
  return relevant


def docno(j: int, num_candidates: int) -> str:
  """A docno that sorts in reverse index order, so trec_eval breaks ties as we do."""
  return f'd{num_candidates - 1 - j:06d}'


def trec_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
  """pytrec_eval's per query metrics under our names."""
  num_queries, num_candidates = scores.shape
  names = [docno(j, num_candidates) for j in range(num_candidates)]
  qrel = {f'q{q}': {names[j]: 1 for j in relevant[q] if j >= 0} for q in range(num_queries)}
  run = {f'q{q}': dict(zip(names, scores[q].astype(np.float64).tolist()))
         for q in range(num_queries)}
  result = pytrec_eval.RelevanceEvaluator(qrel, TREC_MEASURES).evaluate(run)
  return {ours: np.array([result[f'q{q}'][theirs] for q in range(num_queries)])
          for ours, theirs in TREC_NAMES.items()}


def reference_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """Ranks by a stable NumPy argsort of -score (ties: lower index first); 0 at padding."""
  order = np.argsort(-scores, axis=1, kind='stable')
  rank_of = np.empty_like(order)
  np.put_along_axis(rank_of, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
  ranks = np.take_along_axis(rank_of, np.maximum(relevant, 0), axis=1)
  return np.where(relevant >= 0, ranks, 0)


def assert_matches_trec(scores: np.ndarray, relevant: np.ndarray) -> None:
  ours = metrics.metrics_from_scores(scores, relevant)
  theirs = trec_metrics(scores, relevant)
  for name, expected in theirs.items():
    np.testing.assert_allclose(np.asarray(ours[name]), expected, rtol=0, atol=1e-6, err_msg=name)


@pytest.fixture(scope='module')
def random_case() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  scores = rng.standard_normal((50, 300)).astype(np.float32)
  return scores, random_relevant(rng, 50, 300, 11)


def test_matches_pytrec_eval(random_case):
  assert_matches_trec(*random_case)


def test_ties_match_pytrec_eval():
  rng = np.random.default_rng(1)
  # Few distinct values: most scores tie, including with the relevant candidates.
  scores = rng.integers(0, 4, size=(40, 200)).astype(np.float32)
  scores[0] = 0.0  # One query where every candidate ties.
  relevant = random_relevant(rng, 40, 200, 11)
  assert_matches_trec(scores, relevant)


def test_ties_break_by_index():
  scores = np.zeros((1, 6), np.float32)
  relevant = np.array([[4, 1, -1]], np.int32)
  out = metrics.metrics_from_scores(scores, relevant)
  assert float(out['rank_min'][0]) == 2  # Candidate 1: only candidate 0 is ahead.
  assert float(out['rank_max'][0]) == 5
  np.testing.assert_allclose(float(out['ap'][0]), (1 / 2 + 2 / 5) / 2, rtol=1e-6)


def test_ranks_match_argsort(random_case):
  scores, relevant = random_case
  ranks = reference_ranks(scores, relevant)
  valid = relevant >= 0
  out = metrics.metrics_from_scores(scores, relevant)
  np.testing.assert_array_equal(out['rank_min'], np.where(valid, ranks, 1 << 30).min(axis=1))
  np.testing.assert_array_equal(out['rank_max'], ranks.max(axis=1))
  np.testing.assert_array_equal(metrics.relevant_ranks(scores, relevant, block_size=64), ranks)


def test_ranks_match_argsort_with_ties():
  rng = np.random.default_rng(2)
  scores = rng.integers(0, 3, size=(20, 130)).astype(np.float32)
  relevant = random_relevant(rng, 20, 130, 11)
  # Block sizes that do and do not divide N, and one block for all.
  for block_size in (1, 13, 50, 1000):
    np.testing.assert_array_equal(
        metrics.relevant_ranks(scores, relevant, block_size=block_size),
        reference_ranks(scores, relevant), err_msg=f'block_size={block_size}')


def test_segment_counts_match_numpy():
  rng = np.random.default_rng(3)
  num_queries, sizes = 9, (13, 7, 10)
  size = max(sizes)
  scores = np.full((num_queries, len(sizes), size), -np.inf, np.float32)
  for s, n in enumerate(sizes):  # few distinct values: many ties, within and across segments
    scores[:, s, :n] = rng.integers(0, 4, size=(num_queries, n))
  relevant = np.full((num_queries, 4), -1, np.int32)
  for q in range(num_queries):
    for r, s in enumerate(rng.choice(len(sizes), rng.integers(1, 4), replace=False)):
      relevant[q, r] = s * size + rng.integers(0, sizes[s])
  expected = np.zeros((num_queries, 4, len(sizes)), np.int32)
  for q in range(num_queries):
    for r in range(4):
      if relevant[q, r] < 0:
        continue
      target, flat = scores[q].reshape(-1)[relevant[q, r]], np.arange(len(sizes) * size)
      ahead = (scores[q].reshape(-1) > target) | ((scores[q].reshape(-1) == target) &
                                                  (flat < relevant[q, r]))
      expected[q, r] = ahead.reshape(len(sizes), size).sum(axis=1)
  for block_size in (1, 4, 64):
    np.testing.assert_array_equal(
        metrics.segment_counts(scores, relevant, block_size=block_size), expected,
        err_msg=f'block_size={block_size}')


def test_chunking_of_scores_is_invisible(random_case):
  scores, relevant = random_case
  expected = metrics.metrics_from_scores(scores, relevant)
  out = metrics.metrics_from_scores(scores, relevant, chunk_size=7, block_size=37)
  for name in metrics.METRIC_NAMES:
    np.testing.assert_array_equal(out[name], expected[name], err_msg=name)


def test_relevant_ranked_last():
  scores = np.arange(10, 0, -1, dtype=np.float32)[None, :]  # Candidate j has rank j + 1.
  out = metrics.metrics_from_scores(scores, np.array([[9, -1]], np.int32))
  expected = {'ap': 0.1, 'mrr': 0.1, 'recall@1': 0.0, 'recall@10': 1.0,
              'ndcg@10': 1 / np.log2(11), 'rank_min': 10, 'rank_max': 10}
  for name, value in expected.items():
    np.testing.assert_allclose(float(out[name][0]), value, rtol=1e-6, err_msg=name)

  scores = np.arange(30, 0, -1, dtype=np.float32)[None, :]
  out = metrics.metrics_from_scores(scores, np.array([[29]], np.int32))
  assert float(out['rank_min'][0]) == float(out['rank_max'][0]) == 30
  assert float(out['recall@10'][0]) == float(out['ndcg@10'][0]) == 0.0


def test_all_relevant_at_top():
  num_relevant = 11
  scores = np.linspace(1, 0, 100, dtype=np.float32)[None, :]
  relevant = np.arange(num_relevant, dtype=np.int32)[None, ::-1].copy()
  out = metrics.metrics_from_scores(scores, relevant)
  expected = {'ap': 1.0, 'mrr': 1.0, 'recall@1': 1 / num_relevant, 'recall@10': 10 / num_relevant,
              'ndcg@10': 1.0, 'rank_min': 1, 'rank_max': num_relevant}
  for name, value in expected.items():
    np.testing.assert_allclose(float(out[name][0]), value, rtol=1e-6, err_msg=name)


def test_padding_and_repeats():
  scores = np.linspace(1, 0, 20, dtype=np.float32)[None, :].repeat(3, axis=0)
  relevant = np.array([[3, 3, -1], [-1, -1, -1], [3, -1, -1]], np.int32)
  out = metrics.metrics_from_scores(scores, relevant)
  for name in metrics.METRIC_NAMES:
    assert float(out[name][0]) == float(out[name][2]), name  # A repeat counts once.
    assert float(out[name][1]) == 0.0, name  # No relevant: zeros.


def test_summarize():
  per_query = {'ap': np.array([1.0, 0.5, 0.0]), 'rank_min': np.array([1.0, 2.0, 3.0]),
               'rank_max': np.array([4.0, 2.0, 9.0])}
  summary = metrics.summarize(per_query)
  assert summary['ap'] == pytest.approx(0.5)
  assert summary['rank_distance'] == pytest.approx(3.0)
  masked = metrics.summarize(per_query, mask=np.array([True, True, False]))
  assert masked == pytest.approx({'ap': 0.75, 'rank_min': 1.5, 'rank_max': 3.0,
                                  'rank_distance': 1.5})


def test_kth_largest_matches_numpy():
  rng = np.random.default_rng(3)
  x = (np.round(rng.standard_normal((50, 37)) * 4) / 4 + 0.0).astype(np.float32)  # many ties
  x[:5, 20:] = -np.inf
  for k in (1, 7, 20, 37):
    want = -np.sort(-x, axis=-1)[:, k - 1]
    np.testing.assert_array_equal(np.asarray(metrics.kth_largest(x, k)), want)


@pytest.mark.parametrize('k,block_size', [(10, 8), (30, 4), (7, 3)])
def test_top_k_equals_a_stable_sort(k, block_size):
  """Values and indices of a stable descending sort (ties: lower index first); -inf padding of a
  short row; jax.lax.top_k's output exactly, signed zeros included."""
  rng = np.random.default_rng(4)
  scores = (np.round(rng.standard_normal((6, 3, 101)) * 8) / 8 + 0.0).astype(np.float32)  # no -0
  scores[:, 1, 40:] = -np.inf  # a short segment: more blocks of -inf than k allows for
  order = np.argsort(-scores, axis=-1, kind='stable')[..., :k]
  values, index = metrics.top_k(scores, k, block_size)
  np.testing.assert_array_equal(np.asarray(index), order)
  np.testing.assert_array_equal(np.asarray(values), np.take_along_axis(scores, order, -1))
  scores[0, 0, :50] = 0.0
  scores[0, 0, ::3] = -0.0
  for got, want in zip(metrics.top_k(scores, k, block_size), jax.lax.top_k(scores, k)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
