"""Benchmark: hbt's jitted retrieval metrics against pytrec_eval on a full multilingual pool.

hbt ranks every candidate for every query of the pool (13,090 x 13,014 for XQuAD-R). pytrec_eval
on the full pool would need a ~170M-entry Python run dict, beyond a 24 GiB machine, so it is timed
on a subset of queries against all candidates and extrapolated linearly to all queries.

Run stand-alone on random embeddings of the real sizes: `python bench/bench_metrics.py`.
"""

import argparse
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytrec_eval

if __package__ in (None, ''):  # Run as a script: make the repo importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hbt.eval import metrics  # noqa: E402

# XQuAD-R: 1,190 questions in 11 languages; 13,014 candidate sentences over the 11 languages.
NUM_GROUPS = 1190
NUM_LANGS = 11
NUM_CANDIDATES = 13014
DIM = 384
PYTREC_QUERIES = 300
TREC_NAMES = metrics.TREC_EVAL_NAMES
TREC_MEASURES = set(TREC_NAMES.values())
AGREEMENT_TOLERANCE = 1e-6


def _normalize(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_pool(num_groups: int = NUM_GROUPS,
              num_langs: int = NUM_LANGS,
              num_candidates: int = NUM_CANDIDATES,
              dim: int = DIM,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Random unit-norm embeddings shaped like a parallel multilingual pool.

  Query (g, l) (question g in language l, row g * num_langs + l) is relevant to the answer of g in
  every language: one candidate in each of num_langs blocks of candidates. Questions and their
  answers share a random topic direction and languages a random language direction, so the ranks
  are neither random nor perfect.

  Args:
    num_groups: parallel questions per language.
    num_langs: languages.
    num_candidates: candidates over all languages (>= num_langs).
    dim: embedding dimension.
    seed: NumPy seed.

  Returns:
    queries float32 [G * L, dim], candidates float32 [N, dim], relevant int32 [G * L, L].
  """
  rng = np.random.default_rng(seed)
  sizes = np.full(num_langs, num_candidates // num_langs)
  sizes[:num_candidates % num_langs] += 1
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  answers = np.empty((num_groups, num_langs), np.int32)
  for lang, (offset, size) in enumerate(zip(offsets, sizes)):
    # Every sentence answers some question; with more questions than sentences, some answer two.
    extra = rng.integers(0, size, max(0, num_groups - size))
    choice = np.concatenate([rng.permutation(size), extra])
    answers[:, lang] = offset + rng.permutation(choice[:num_groups])

  topics = rng.standard_normal((num_groups, dim)) / np.sqrt(dim)
  langs = rng.standard_normal((num_langs, dim)) / np.sqrt(dim)
  cand_lang = np.repeat(np.arange(num_langs), sizes)
  noise = rng.standard_normal((num_candidates, dim)) / np.sqrt(dim)
  candidates = 2.0 * noise + 0.5 * langs[cand_lang]
  candidates[answers.reshape(-1)] += np.repeat(topics, num_langs, axis=0)
  query_group = np.repeat(np.arange(num_groups), num_langs)
  query_lang = np.tile(np.arange(num_langs), num_groups)
  queries = (topics[query_group] + 0.5 * langs[query_lang]
             + rng.standard_normal((num_groups * num_langs, dim)) / np.sqrt(dim) * 2.0)
  return _normalize(queries), _normalize(candidates), answers[query_group]


def _timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - start


@jax.jit
def _scores(queries: jax.Array, candidates: jax.Array) -> jax.Array:
  """The scores metrics_from_embeddings computes (XLA's dot rounds each row alike in any batch)."""
  return jnp.dot(queries, candidates.T, precision=jax.lax.Precision.HIGHEST,
                 preferred_element_type=jnp.float32)


def pytrec_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
  """pytrec_eval's per query metrics under hbt's names, building qrel and run dicts included.

  Candidate j is named with a docno that sorts in reverse index order, so trec_eval's tie break
  (docno descending) is hbt's (index ascending).

  Args:
    scores: float32 [Q, N].
    relevant: int32 [Q, R] padded with -1.

  Returns:
    A dict of float64 [Q] arrays keyed by hbt metric names.
  """
  num_queries, num_candidates = scores.shape
  names = [f'd{num_candidates - 1 - j:07d}' for j in range(num_candidates)]
  qrel = {str(q): {names[j]: 1 for j in relevant[q] if j >= 0} for q in range(num_queries)}
  run = {str(q): dict(zip(names, scores[q].tolist())) for q in range(num_queries)}
  result = pytrec_eval.RelevanceEvaluator(qrel, TREC_MEASURES).evaluate(run)
  return {ours: np.array([result[str(q)][theirs] for q in range(num_queries)])
          for ours, theirs in TREC_NAMES.items()}


def bench_metrics(query_emb: np.ndarray,
                  cand_emb: np.ndarray,
                  relevant: np.ndarray,
                  pytrec_queries: int = PYTREC_QUERIES,
                  *,
                  chunk_size: int = metrics.DEFAULT_CHUNK_SIZE,
                  repeats: int = 3,
                  seed: int = 0) -> dict:
  """Times hbt's metrics on the whole pool and pytrec_eval on a subset, and checks they agree.

  Args:
    query_emb: float32 [Q, D] query embeddings.
    cand_emb: float32 [N, D] candidate embeddings.
    relevant: int32 [Q, R] relevant candidates per query, padded with -1.
    pytrec_queries: how many random queries pytrec_eval ranks all candidates for.
    chunk_size: hbt's queries per chunk.
    repeats: steady-state calls of hbt; the fastest is reported.
    seed: seed of the query subset.

  Returns:
    A dict: hbt_first_s (first call, compile included), hbt_steady_s, pytrec_queries,
    pytrec_subset_s, pytrec_extrapolated_s (linear in queries), ratio (pytrec extrapolated / hbt
    steady), max_abs_diff and agree (pytrec_eval vs hbt on the subset), summary (hbt's means).
  """
  num_queries = query_emb.shape[0]
  queries, candidates, rel = (jnp.asarray(query_emb, jnp.float32),
                              jnp.asarray(cand_emb, jnp.float32), jnp.asarray(relevant, jnp.int32))
  jax.block_until_ready((queries, candidates, rel))

  per_query, first = _timed(metrics.metrics_from_embeddings, queries, candidates, rel,
                            chunk_size=chunk_size)
  steady = min(_timed(metrics.metrics_from_embeddings, queries, candidates, rel,
                      chunk_size=chunk_size)[1] for _ in range(repeats))

  subset = np.sort(np.random.default_rng(seed).choice(num_queries, min(pytrec_queries, num_queries),
                                                      replace=False))
  sub_scores = np.asarray(_scores(queries[subset], candidates))
  start = time.perf_counter()
  theirs = pytrec_metrics(sub_scores, np.asarray(relevant)[subset])
  pytrec_s = time.perf_counter() - start
  max_abs_diff = max(float(np.max(np.abs(np.asarray(per_query[name])[subset] - value)))
                     for name, value in theirs.items())

  pytrec_extrapolated = pytrec_s * num_queries / len(subset)
  return {
      'num_queries': num_queries,
      'num_candidates': cand_emb.shape[0],
      'num_relevant': relevant.shape[1],
      'dim': query_emb.shape[1],
      'hbt_first_s': first,
      'hbt_steady_s': steady,
      'pytrec_queries': len(subset),
      'pytrec_subset_s': pytrec_s,
      'pytrec_extrapolated_s': pytrec_extrapolated,
      'ratio': pytrec_extrapolated / steady,
      'max_abs_diff': max_abs_diff,
      'agree': max_abs_diff <= AGREEMENT_TOLERANCE,
      'summary': metrics.summarize(per_query),
  }


def print_report(result: dict) -> None:
  """Prints bench_metrics' figures."""
  print(f"pool: {result['num_queries']} queries x {result['num_candidates']} candidates, "
        f"R = {result['num_relevant']}, D = {result['dim']}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}")
  print(f"hbt metrics_from_embeddings, whole pool: first call (compile included) "
        f"{result['hbt_first_s']:.2f} s, steady state {result['hbt_steady_s']:.2f} s")
  print(f"pytrec_eval, {result['pytrec_queries']} queries x all candidates (run dict building "
        f"included): {result['pytrec_subset_s']:.2f} s")
  print(f"pytrec_eval, EXTRAPOLATED linearly to {result['num_queries']} queries: "
        f"{result['pytrec_extrapolated_s']:.0f} s")
  print(f"ratio pytrec_eval (extrapolated) / hbt (steady state): {result['ratio']:.0f}x")
  verdict = 'agree' if result['agree'] else 'DISAGREE'
  print(f"pytrec_eval vs hbt on the {result['pytrec_queries']} queries: {verdict} "
        f"(max |diff| {result['max_abs_diff']:.2e})")
  print('hbt means: ' + ', '.join(f'{k} {v:.4f}' for k, v in result['summary'].items()))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--pytrec-queries', type=int, default=PYTREC_QUERIES)
  parser.add_argument('--chunk-size', type=int, default=metrics.DEFAULT_CHUNK_SIZE)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  queries, candidates, relevant = make_pool(seed=args.seed)
  result = bench_metrics(queries, candidates, relevant, args.pytrec_queries,
                         chunk_size=args.chunk_size, seed=args.seed)
  print_report(result)
  return 0 if result['agree'] else 1


if __name__ == '__main__':
  sys.exit(main())
