"""bench/bench_metrics.py on a small pool: its figures agree with pytrec_eval, its TREC files exist."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'bench'))
import bench_metrics  # noqa: E402  pylint: disable=g-import-not-at-top

SIZES = (23, 30, 17)


def test_bench_metrics_on_a_small_pool_agrees_with_pytrec_eval_and_times_the_trec_files():
  queries, candidates, relevant = bench_metrics.make_pool(num_groups=20, sizes=SIZES, dim=16)
  result = bench_metrics.bench_metrics(queries, candidates, relevant, pytrec_queries=15, sizes=SIZES,
                                 chunk_size=8, top_k=10, repeats=1)
  assert result['num_queries'] == 60 and result['num_candidates'] == sum(SIZES)
  assert result['agree'] and result['max_abs_diff'] < 1e-6
  assert result['trec_s'] > 0
  assert result['matmul_s'] > 0 and result['matmul_gflop'] == 2 * 60 * 3 * 30 * 16 / 1e9
  # 3 qrels + multi.qrels, 3 x 3 pair runs and 3 multi runs of 20 queries x 10 lines at least.
  assert result['trec_bytes'] > 9 * 20 * 10 * 20
  assert 0 < result['summary']['ap'] <= 1


def test_bench_metrics_without_top_k_scores_the_same_and_writes_no_trec_files():
  """--top-k 0, the path of the validation evaluators (config.eval.trec_depth 0)."""
  queries, candidates, relevant = bench_metrics.make_pool(num_groups=20, sizes=SIZES, dim=16)
  args = dict(pytrec_queries=15, sizes=SIZES, chunk_size=8, repeats=1)
  with_top = bench_metrics.bench_metrics(queries, candidates, relevant, top_k=10, **args)
  without = bench_metrics.bench_metrics(queries, candidates, relevant, top_k=0, **args)
  assert without['top_k'] == 0 and without['trec_s'] is None and without['trec_bytes'] is None
  assert without['agree'] and without['device_s'] > 0
  assert without['summary'] == with_top['summary']
