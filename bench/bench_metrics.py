"""Benchmark: the pool metrics evaluation really computes (hbt.eval.evaluate.score) vs pytrec_eval.

XQuAD-R's multilingual pool is 13,090 queries (1,190 per language) x 13,014 candidates (11 language
segments of the real sizes). `evaluate.score` is the function every evaluation calls: one jitted
pass that scores every query against the pool, counts the candidates of each language ranked
ahead of each answer and keeps each language's top candidates (for the TREC run files), then the
per-query and per-pair figures on the host. It is timed whole (first call, compile included, and
steady state), its device pass alone (`evaluate.score_pool`, with and without top_k), and the
score matmul alone (`evaluate.pool_scores`).

pytrec_eval on the full pool would need a ~170M-entry Python run dict, so it is timed on a subset
of queries against all candidates and extrapolated linearly to all queries. The embeddings are
random, with the real relevance structure (every question's answer in each language, some sentences
answering two questions), and quantised to multiples of 2^-9: every dot product is then exact in
float32 whatever the summation order, so hbt and pytrec_eval (given float64 scores) rank alike, ties
included, and their per-query figures must agree to 1e-6.

`--baseline REV` (e.g. main) times evaluate.score of that git revision's hbt/ too, in a child process
on the same pool, before the current one, prints the two side by side and checks that every figure
(per-query, per-pair, summaries, top candidates) is identical.

Run stand-alone: `python bench/bench_metrics.py [--baseline main] [--pool-groups 1190]`
(`--pool-groups N`: N questions per language instead of XQuAD-R's 1,190, the candidates unchanged).
Timings on a shared machine vary; compare only figures from one run.
"""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytrec_eval

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ''):  # Run as a script: make the repo (or a baseline's hbt/) importable.
  sys.path.insert(0, sys.argv[sys.argv.index('--hbt-root') + 1] if '--hbt-root' in sys.argv
                  else str(_ROOT))

from hbt.data import types  # noqa: E402
from hbt.eval import evaluate  # noqa: E402
from hbt.eval import metrics  # noqa: E402
from hbt.eval import report  # noqa: E402

# XQuAD-R: 1,190 questions in 11 languages; the candidate sentences of each language.
NUM_GROUPS = 1190
XQUAD_R_SIZES = (1222, 1276, 1234, 1180, 1215, 1244, 1219, 852, 1167, 1209, 1196)  # 13,014
DIM = 384
QUANTUM = 2.0**-9
PYTREC_QUERIES = 300
TREC_DEPTH = 100
TREC_NAMES = metrics.TREC_EVAL_NAMES
TREC_MEASURES = set(TREC_NAMES.values())
AGREEMENT_TOLERANCE = 1e-6


def make_pool(num_groups: int = NUM_GROUPS,
              sizes: tuple[int, ...] = XQUAD_R_SIZES,
              dim: int = DIM,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Random embeddings shaped like a parallel multilingual pool (XQuAD-R's by default).

  Query (g, l) (question g in language l, row g * L + l) is relevant to the answer of g in every
  language: one candidate in each of the L language segments (of `sizes` candidates). Questions and
  their answers share a random topic direction and languages a random language direction, so the
  ranks are neither random nor perfect. Entries are multiples of QUANTUM, norms about 1.

  Args:
    num_groups: parallel questions per language.
    sizes: candidates of each language.
    dim: embedding dimension.
    seed: NumPy seed.

  Returns:
    queries float32 [G * L, dim], candidates float32 [sum(sizes), dim] (language segments in
    order), relevant int32 [G * L, L] (pool indices).
  """
  rng = np.random.default_rng(seed)
  num_langs, num_candidates = len(sizes), int(np.sum(sizes))
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
  return _quantise(queries), _quantise(candidates), answers[query_group]


def _quantise(x: np.ndarray) -> np.ndarray:
  """Unit rows rounded to multiples of QUANTUM: float32 dot products of them are exact."""
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  return (np.round(x / QUANTUM) * QUANTUM).astype(np.float32)


def as_benchmark(queries: np.ndarray, candidates: np.ndarray, relevant: np.ndarray,
                 sizes: tuple[int, ...]) -> tuple[types.Benchmark, dict]:
  """make_pool's arrays as a Benchmark (empty texts) and evaluate.score's embeddings dict."""
  num_langs = len(sizes)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  num_groups = len(queries) // num_langs
  qids = tuple(f'g{g}' for g in range(num_groups))
  splits, embeddings = {}, {}
  for l, (offset, size) in enumerate(zip(offsets, sizes)):
    lang = f'l{l:02d}'
    answer = (relevant[l::num_langs, l] - offset).astype(np.int32)
    splits[lang] = types.LanguageSplit(lang, qids, ('',) * num_groups, ('',) * int(size),
                                       np.zeros(size, np.int32), ('',), answer)
    embeddings[lang] = (queries[l::num_langs], candidates[offset:offset + size])
  return types.Benchmark('synthetic_xquad_r', tuple(splits), splits), embeddings


def _timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - start


def pytrec_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
  """pytrec_eval's per query metrics under hbt's names, building qrel and run dicts included.

  Candidate j is named with a docno that sorts in reverse index order, so trec_eval's tie break
  (docno descending) is hbt's (index ascending).

  Args:
    scores: float64 [Q, N].
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
                  sizes: tuple[int, ...] = XQUAD_R_SIZES,
                  chunk_size: int = 128,
                  top_k: int = TREC_DEPTH,
                  repeats: int = 3,
                  seed: int = 0) -> dict:
  """Times evaluate.score on the whole pool and pytrec_eval on a subset, and checks they agree.

  Args:
    query_emb: float32 [Q, D] query embeddings (make_pool's layout).
    cand_emb: float32 [N, D] candidate embeddings.
    relevant: int32 [Q, L] relevant candidates per query (pool indices).
    pytrec_queries: how many random queries pytrec_eval ranks all candidates for.
    sizes: candidates of each language (make_pool's).
    chunk_size: evaluate.score's queries per chunk (config.eval.chunk_size).
    top_k: evaluate.score's top_k (config.eval.trec_depth).
    repeats: steady-state calls of each timed function; the fastest is reported.
    seed: seed of the query subset.

  Returns:
    A dict: hbt_first_s (first call of evaluate.score, compile included), hbt_steady_s,
    device_s (its device pass alone, evaluate.score_pool), device_no_top_s (the same without
    top_k), matmul_s and matmul_gflop (its float32 score matmul alone, evaluate.pool_scores over
    the pool padded per language), trec_s and trec_bytes (writing the TREC run files and qrels of the results,
    hbt.eval.report.write_trec; None without top_k), pytrec_queries,
    pytrec_subset_s, pytrec_extrapolated_s (linear in queries), ratio (pytrec extrapolated / hbt
    steady), max_abs_diff and agree (pytrec_eval vs hbt on the subset), summary (hbt's multi means).
  """
  benchmark, embeddings = as_benchmark(query_emb, cand_emb, relevant, sizes)
  num_queries, num_langs = query_emb.shape[0], len(sizes)
  score = lambda: evaluate.score(benchmark, embeddings, chunk_size=chunk_size, top_k=top_k)
  results, first = _timed(score)
  steady = min(_timed(score)[1] for _ in range(repeats))
  device_s = {}
  for k in (top_k, 0):
    device_pass = lambda k=k: evaluate.score_pool(benchmark, embeddings, chunk_size=chunk_size,
                                                  top_k=k)
    device_pass()  # compiles
    device_s[k] = min(_timed(device_pass)[1] for _ in range(repeats))
  # The float32 score matmul alone, chunked as the device pass chunks it (a max over each row
  # keeps XLA from dropping it): what is left of device_no_top_s is the counting.
  queries, _, pool, pool_sizes = evaluate.pool_layout(benchmark, embeddings)
  matmul = jax.jit(lambda q, p, s: metrics.map_row_chunks(
      lambda c: {'max': evaluate.pool_scores(c, p, s).max(-1)}, (q,), chunk_size))
  arrays = [jax.device_put(a) for a in (queries, pool, pool_sizes)]
  matmul(*arrays)  # compiles
  matmul_s = min(_timed(matmul, *arrays)[1] for _ in range(repeats))
  matmul_flop = 2 * queries.shape[0] * pool.shape[0] * pool.shape[1] * pool.shape[2]
  trec_s = None
  if top_k:  # the TREC run files that evaluation writes with these results (eval/trec/)
    with tempfile.TemporaryDirectory() as folder:
      start = time.perf_counter()
      report.write_trec(folder, results)
      trec_s = time.perf_counter() - start
      trec_bytes = sum(f.stat().st_size for f in pathlib.Path(folder).iterdir())

  subset = np.sort(np.random.default_rng(seed).choice(num_queries, min(pytrec_queries, num_queries),
                                                      replace=False))
  sub_scores = query_emb[subset].astype(np.float64) @ cand_emb.T.astype(np.float64)
  start = time.perf_counter()
  theirs = pytrec_metrics(sub_scores, relevant[subset])
  pytrec_s = time.perf_counter() - start
  # Row g * L + l of make_pool is question g of language l.
  per_query = results['per_query']['multi']
  ours = {name: np.array([per_query[benchmark.langs[q % num_langs]][name][q // num_langs]
                          for q in subset]) for name in theirs}
  max_abs_diff = max(float(np.max(np.abs(ours[name] - value))) for name, value in theirs.items())

  pytrec_extrapolated = pytrec_s * num_queries / len(subset)
  return {
      'num_queries': num_queries,
      'num_candidates': cand_emb.shape[0],
      'num_relevant': relevant.shape[1],
      'dim': query_emb.shape[1],
      'chunk_size': chunk_size,
      'top_k': top_k,
      'hbt_first_s': first,
      'hbt_steady_s': steady,
      'device_s': device_s[top_k],
      'device_no_top_s': device_s[0],
      'matmul_s': matmul_s,
      'matmul_gflop': matmul_flop / 1e9,
      'trec_s': trec_s,
      'trec_bytes': trec_bytes if trec_s is not None else None,
      'pytrec_queries': len(subset),
      'pytrec_subset_s': pytrec_s,
      'pytrec_extrapolated_s': pytrec_extrapolated,
      'ratio': pytrec_extrapolated / steady,
      'max_abs_diff': max_abs_diff,
      'agree': max_abs_diff <= AGREEMENT_TOLERANCE,
      'summary': results['summary']['multi'],
  }


def digest(results: dict) -> str:
  """A hash of every figure of evaluate.score's results (per query, per pair, summaries, top)."""
  h = hashlib.sha256()

  def walk(value):
    if isinstance(value, dict):
      for k in sorted(value):
        h.update(str(k).encode())
        walk(value[k])
    elif isinstance(value, (list, tuple)):
      for v in value:
        walk(v)
    else:
      array = np.asarray(value)
      h.update(str(array.dtype).encode() + array.tobytes())

  walk({k: v for k, v in results.items() if k != 'group_metric'})
  return h.hexdigest()


def time_score(chunk_size: int, top_k: int, repeats: int, seed: int,
               num_groups: int = NUM_GROUPS) -> dict:
  """evaluate.score of the importable hbt on make_pool's pool: first call, steady state, digest."""
  queries, candidates, relevant = make_pool(num_groups, seed=seed)
  benchmark, embeddings = as_benchmark(queries, candidates, relevant, XQUAD_R_SIZES)
  score = lambda: evaluate.score(benchmark, embeddings, chunk_size=chunk_size, top_k=top_k)
  results, first = _timed(score)
  steady = min(_timed(score)[1] for _ in range(repeats))
  return {'first_s': first, 'steady_s': steady, 'digest': digest(results),
          'load': os.getloadavg()[0]}


def time_baseline(rev: str, args) -> dict:
  """time_score of git revision `rev`'s hbt/, in a child process (this script, --hbt-root)."""
  with tempfile.TemporaryDirectory() as tmp:
    archive = subprocess.run(['git', '-C', str(_ROOT), 'archive', rev, 'hbt'], check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', tmp], input=archive, check=True)
    proc = subprocess.run(
        [sys.executable, __file__, '--hbt-root', tmp, '--time-only', '--chunk-size',
         str(args.chunk_size), '--top-k', str(args.top_k), '--repeats', str(args.repeats),
         '--seed', str(args.seed), '--pool-groups', str(args.pool_groups)],
        capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise RuntimeError(f'baseline {rev} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}')
  return json.loads(lines[-1][len('RESULT '):])


def print_report(result: dict) -> None:
  """Prints bench_metrics' figures."""
  print(f"pool: {result['num_queries']:,} queries x {result['num_candidates']:,} candidates, "
        f"R = {result['num_relevant']}, D = {result['dim']}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; chunk {result['chunk_size']}, top_k {result['top_k']}")
  print(f"hbt evaluate.score, whole pool: first call (compile included) "
        f"{result['hbt_first_s']:.2f} s, steady state {result['hbt_steady_s']:.2f} s")
  print(f"  of which the device pass (evaluate.score_pool): {result['device_s']:.2f} s "
        f"({result['device_no_top_s']:.2f} s without top_k)")
  print(f"  of which the score matmul alone (evaluate.pool_scores, {result['matmul_gflop']:.0f} "
        f"GFLOP): {result['matmul_s']:.2f} s, {result['matmul_gflop'] / result['matmul_s']:.0f} "
        f"GFLOP/s")
  if result.get('trec_s') is not None:
    print(f"  then writing the TREC run files and qrels (report.write_trec): {result['trec_s']:.1f} s, "
          f"{result['trec_bytes'] / 2**20:,.0f} MiB")
  print(f"pytrec_eval, {result['pytrec_queries']} queries x all candidates (run dict building "
        f"included): {result['pytrec_subset_s']:.2f} s")
  print(f"pytrec_eval, EXTRAPOLATED linearly to {result['num_queries']:,} queries: "
        f"{result['pytrec_extrapolated_s']:.2f} s")
  print(f"ratio pytrec_eval (extrapolated) / hbt evaluate.score (steady state): "
        f"{result['ratio']:.1f}x")
  verdict = 'agree' if result['agree'] else 'DISAGREE'
  print(f"pytrec_eval vs hbt on the {result['pytrec_queries']} queries: {verdict} "
        f"(max |diff| {result['max_abs_diff']:.2e})")
  print('hbt multilingual means: ' + ', '.join(f'{k} {v:.4f}'
                                               for k, v in result['summary'].items()))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--pytrec-queries', type=int, default=PYTREC_QUERIES)
  parser.add_argument('--chunk-size', type=int, default=128)
  parser.add_argument('--top-k', type=int, default=TREC_DEPTH)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--pool-groups', type=int, default=NUM_GROUPS,
                      help="questions per language (XQuAD-R's 1,190 by default)")
  parser.add_argument('--baseline', default='',
                      help='a git revision whose evaluate.score is timed too, side by side')
  parser.add_argument('--hbt-root', help=argparse.SUPPRESS)  # the hbt to import (a baseline's)
  parser.add_argument('--time-only', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.time_only:
    print('RESULT ' + json.dumps(time_score(args.chunk_size, args.top_k, args.repeats, args.seed,
                                            args.pool_groups)))
    return 0
  import common  # pylint: disable=g-import-not-at-top  (bench/common.py)
  print(common.machine_header(), flush=True)
  before = time_baseline(args.baseline, args) if args.baseline else None
  if before:
    print(f"baseline {args.baseline}: evaluate.score first call {before['first_s']:.2f} s, steady "
          f"{before['steady_s']:.2f} s (load average {before['load']:.2f})", flush=True)
    now = time_score(args.chunk_size, args.top_k, args.repeats, args.seed, args.pool_groups)
  queries, candidates, relevant = make_pool(args.pool_groups, seed=args.seed)
  result = bench_metrics(queries, candidates, relevant, args.pytrec_queries,
                         chunk_size=args.chunk_size, top_k=args.top_k, repeats=args.repeats,
                         seed=args.seed)
  print_report(result)
  print(f'load average {os.getloadavg()[0]:.2f} at the end')
  if before:
    same = before['digest'] == now['digest']
    print(f"side by side, evaluate.score steady state: {args.baseline} {before['steady_s']:.2f} s "
          f"(load {before['load']:.2f}), this tree {now['steady_s']:.2f} s (load "
          f"{now['load']:.2f}): {before['steady_s'] / now['steady_s']:.2f}x; first call "
          f"{before['first_s']:.2f} s vs {now['first_s']:.2f} s; every figure "
          f"{'identical' if same else 'DIFFERENT'}")
    return 0 if result['agree'] and same else 1
  return 0 if result['agree'] else 1


if __name__ == '__main__':
  sys.exit(main())
