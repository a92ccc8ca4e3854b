"""Retrieval metrics over the full ranking of a candidate pool, jitted and without sorting.

Every query ranks all N candidates by score. The metrics only need the rank of each relevant
candidate, and the rank of candidate r is a count, so nothing is ever sorted:

  rank_r = 1 + #{j : s_j > s_r} + #{j < r : s_j == s_r}.

Ties: among candidates with equal scores the one with the lower index ranks first. This is a strict
total order, so every candidate gets a distinct rank in 1..N. (trec_eval breaks ties by docno
descending; naming candidate j with a docno that sorts in reverse index order makes the two agree.)

Per query metrics (binary relevance, all N candidates ranked):
  ap: average precision, sum over relevant r of (#relevant ranked at or above r) / rank_r,
    divided by the number of relevant.
  recall@1, recall@10: fraction of the relevant ranked in the top 1 / top 10.
  mrr: 1 / the best rank of a relevant candidate.
  ndcg@10: DCG over the top 10 with gain 1 and discount 1 / log2(rank + 1), divided by the ideal DCG
    of min(#relevant, 10) relevant at the top.
  rank_min, rank_max: the best and the worst rank of a relevant candidate. Their difference,
    averaged over queries, is the rank distance ('language bias') of a multilingual pool.

`relevant` lists each query's relevant candidate indices (in [0, N)) padded with -1; repeated
indices in a row count once. A query without relevant candidates gets 0 for every metric (mask it
out of `summarize`). Scores must be finite.

A multilingual pool is scored by `segment_counts`: for every relevant candidate, the number of
candidates ranked ahead of it in each language segment, from which its rank in any sub-pool of
languages is a sum (hbt.eval.evaluate builds every setting from these counts).

Cost: Q x R x N comparisons. `metrics_from_scores` processes `chunk_size` queries at a time
(`jax.lax.map`) and every count runs `block_size` candidates at a time (`jax.lax.scan`), so memory
is O(chunk_size x N).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

RECALL_CUTOFFS = (1, 10)
NDCG_CUTOFF = 10
# Queries per chunk: 256 x 11 relevant x 13,014 candidates = 37M comparisons (147 MB as int32 if
# materialised), of which only [256, 11, CANDIDATE_BLOCK_SIZE] (6 MB) are held at once.
DEFAULT_CHUNK_SIZE = 256
CANDIDATE_BLOCK_SIZE = 512
TOP_K_BLOCK_SIZE = 8  # `top_k`'s blocks (the fastest of 4, 8, 16 at XQuAD-R's pool, k = 100)
METRIC_NAMES = ('ap', 'recall@1', 'recall@10', 'mrr', 'ndcg@10', 'rank_min', 'rank_max')
# The same measures in trec_eval (pytrec_eval), the reference they are tested against.
TREC_EVAL_NAMES = {'ap': 'map', 'mrr': 'recip_rank', 'recall@1': 'recall_1',
                   'recall@10': 'recall_10', 'ndcg@10': 'ndcg_cut_10'}

# 1 / log2(rank + 1) for rank 1..NDCG_CUTOFF, rounded once from float64.
_DISCOUNTS = (1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2))).astype(np.float32)
# Ideal DCG of k relevant documents at the top, for k = 0..NDCG_CUTOFF.
_IDEAL_DCG = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2)))
                            ]).astype(np.float32)


def _valid_relevant(relevant: jax.Array) -> jax.Array:
  """Which entries of `relevant` [C, R] are real: not padding and not a repeat of an earlier entry.

  Args:
    relevant: int32 [C, R] candidate indices, padded with -1.

  Returns:
    bool [C, R].
  """
  r = relevant.shape[1]
  same = relevant[:, :, None] == relevant[:, None, :]  # [C, R, R']
  earlier = jnp.arange(r)[None, :] < jnp.arange(r)[:, None]  # [R, R']: r' < r
  repeated = jnp.any(same & earlier, axis=-1)
  return (relevant >= 0) & ~repeated


def segment_counts(scores: jax.Array,
                   relevant: jax.Array,
                   *,
                   block_size: int = CANDIDATE_BLOCK_SIZE) -> jax.Array:
  """How many candidates of each segment rank ahead of each relevant candidate.

  A multilingual pool is a list of segments (one per language), laid out as [S, M] with every
  segment padded to M candidates by scores of -inf (never ahead of anything). Candidate (s, m) has
  the flat index s * M + m, and ties are broken by the flat index ascending. The rank of a relevant
  candidate in any sub-pool made of some segments is 1 + the sum of its counts over those segments:
  its own segment alone gives its monolingual / cross-lingual rank, all segments its multilingual
  rank.

  Args:
    scores: float32 [C, S, M] finite scores (-inf at padding) of C queries.
    relevant: int32 [C, R] flat indices of the relevant candidates, padded with -1.
    block_size: the most candidates of each segment compared at once.

  Returns:
    int32 [C, R, S]: #{(s, m) : score(s, m) > t or (score(s, m) == t and s * M + m < r)} for each
    relevant r with score t; 0 at padding.
  """
  num_rows, num_segments, size = scores.shape
  valid = relevant >= 0
  index = jnp.where(valid, relevant, 0)
  target = jnp.take_along_axis(scores.reshape(num_rows, -1), index, axis=1)
  target, index = target[:, :, None, None], index[:, :, None, None]  # [C, R, 1, 1]
  # XLA's CPU backend does not fuse a comparison into the reduction that counts it: count
  # `block` candidates of every segment at a time, so only [C, R, S, block] is ever materialised.
  num_blocks = max(1, -(-size // block_size))
  block = -(-size // num_blocks)
  scores = jnp.pad(scores, ((0, 0), (0, 0), (0, num_blocks * block - size)),
                   constant_values=-jnp.inf)
  segment_start = jnp.arange(num_segments, dtype=jnp.int32)[:, None] * size  # [S, 1]

  def count_block(counts, start):
    row = jax.lax.dynamic_slice_in_dim(scores, start, block, axis=2)[:, None]  # [C, 1, S, block]
    flat = segment_start + start + jnp.arange(block, dtype=jnp.int32)  # [S, block]
    ahead = (row > target) | ((row == target) & (flat < index))  # [C, R, S, block]
    return counts + jnp.sum(ahead, axis=-1, dtype=jnp.int32), None

  zeros = jnp.zeros((num_rows, relevant.shape[1], num_segments), jnp.int32)
  starts = jnp.arange(num_blocks, dtype=jnp.int32) * block
  counts, _ = jax.lax.scan(count_block, zeros, starts)
  return jnp.where(valid[:, :, None], counts, 0)


def kth_largest(x: jax.Array, k: int) -> jax.Array:
  """The k-th largest value of x [..., n] (float32, no NaN) along its last axis, by bisection.

  32 vectorised counting passes over order-preserving integer keys (-0.0 below +0.0), no sort.
  """
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  keys = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))

  def step(i, result):  # the largest key v so far with #{keys >= v} >= k, one bit at a time
    candidate = result | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
    return jnp.where(jnp.sum(keys >= candidate[..., None], axis=-1) >= k, candidate, result)

  key = jax.lax.fori_loop(0, 32, step, jnp.zeros(x.shape[:-1], jnp.uint32), unroll=True)
  return jax.lax.bitcast_convert_type(
      jnp.where(key >> 31 == 1, key & jnp.uint32(0x7fffffff), ~key), jnp.float32)


def top_k(scores: jax.Array, k: int, block_size: int = TOP_K_BLOCK_SIZE):
  """jax.lax.top_k(scores, k) along the last axis (values, indices), the same output, faster.

  XLA's CPU top_k is a partial sort of each row; most of its time goes to keeping a heap of the
  best k so far. The k-th largest of the maxima of blocks of `block_size` scores, T, is at most the
  k-th largest score (k blocks each hold a score >= T), so masking every score below T with -inf
  changes no output (ties keep their positions) and leaves the heap about k scores to take in.

  Args:
    scores: float32 [..., N] (finite or -inf).
    k: how many (<= N).
    block_size: scores per block.
  """
  size = scores.shape[-1]
  num_blocks = -(-size // block_size)
  if num_blocks < k:
    return jax.lax.top_k(scores, k)
  pad = [(0, 0)] * (scores.ndim - 1) + [(0, num_blocks * block_size - size)]
  block_max = jnp.pad(scores, pad, constant_values=-jnp.inf).reshape(
      *scores.shape[:-1], num_blocks, block_size).max(-1)
  threshold = kth_largest(block_max, k)[..., None]
  return jax.lax.top_k(jnp.where(scores >= threshold, scores, -jnp.inf), k)


def relevant_ranks(scores: jax.Array,
                   relevant: jax.Array,
                   *,
                   block_size: int = CANDIDATE_BLOCK_SIZE) -> jax.Array:
  """1-based ranks of the relevant candidates, ties broken by candidate index ascending.

  Args:
    scores: float32 [C, N] finite scores of N candidates for C queries.
    relevant: int32 [C, R] relevant candidate indices, padded with -1.
    block_size: the most candidates compared at once.

  Returns:
    int32 [C, R]: rank_r = 1 + #{j: s_j > s_r} + #{j < r: s_j == s_r}; 0 at padding.
  """
  ahead = segment_counts(scores[:, None, :], relevant, block_size=block_size)[:, :, 0]
  return jnp.where(relevant >= 0, 1 + ahead, 0)


@jax.jit
def metrics_from_ranks(ranks: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
  """Per query metrics from the ranks of the relevant candidates.

  Args:
    ranks: int32 [C, R] distinct 1-based ranks of the relevant candidates (any value where invalid).
    valid: bool [C, R] which slots hold a relevant candidate.

  Returns:
    A dict of float32 [C] arrays keyed by METRIC_NAMES; zeros for a query without relevant.
  """
  n_rel = jnp.sum(valid, axis=-1)
  has_rel = n_rel > 0
  denominator = jnp.maximum(n_rel, 1).astype(jnp.float32)
  rank_f = jnp.maximum(ranks, 1).astype(jnp.float32)

  # Number of relevant ranked at or above each relevant one (ranks are distinct).
  above = valid[:, None, :] & (ranks[:, None, :] < ranks[:, :, None])  # [C, R, R']
  position = 1 + jnp.sum(above, axis=-1)
  ap = jnp.sum(jnp.where(valid, position / rank_f, 0.0), axis=-1) / denominator

  out = {'ap': ap}
  for k in RECALL_CUTOFFS:
    out[f'recall@{k}'] = jnp.sum(valid & (ranks <= k), axis=-1) / denominator

  big = jnp.iinfo(jnp.int32).max
  rank_min = jnp.where(has_rel, jnp.min(jnp.where(valid, ranks, big), axis=-1), 0)
  rank_max = jnp.max(jnp.where(valid, ranks, 0), axis=-1)
  out['mrr'] = jnp.where(has_rel, 1.0 / jnp.maximum(rank_min, 1).astype(jnp.float32), 0.0)

  discounts = jnp.asarray(_DISCOUNTS)[jnp.clip(ranks, 1, NDCG_CUTOFF) - 1]
  dcg = jnp.sum(jnp.where(valid & (ranks <= NDCG_CUTOFF), discounts, 0.0), axis=-1)
  ideal = jnp.asarray(_IDEAL_DCG)[jnp.minimum(n_rel, NDCG_CUTOFF)]
  out['ndcg@10'] = jnp.where(has_rel, dcg / jnp.where(has_rel, ideal, 1.0), 0.0)

  out['rank_min'] = rank_min
  out['rank_max'] = rank_max
  return {name: out[name].astype(jnp.float32) for name in METRIC_NAMES}


GRADED_CUTOFFS = {'ndcg': 10, 'recall': 100}
GRADED_METRIC_NAMES = ('ndcg@10', 'recall@100', 'map')
TREC_EVAL_GRADED_NAMES = {'ndcg@10': 'ndcg_cut_10', 'recall@100': 'recall_100', 'map': 'map'}


@jax.jit
def graded_metrics_from_ranks(ranks: jax.Array, gains: jax.Array,
                              valid: jax.Array) -> dict[str, jax.Array]:
  """Per query nDCG@10 (graded), Recall@100 and mAP from the ranks of the relevant candidates.

  As trec_eval: the gain of a candidate is its relevance grade; the ideal DCG puts the query's
  gains in decreasing order at the top (their order is a count too, not a sort); recall and AP
  count every candidate of grade > 0 as relevant.

  Args:
    ranks: int32 [C, R] distinct 1-based ranks of the relevant candidates (any value where invalid).
    gains: float32 [C, R] their grades (> 0 where valid).
    valid: bool [C, R] which slots hold a relevant candidate.

  Returns:
    A dict of float32 [C] arrays keyed by GRADED_METRIC_NAMES; zeros for a query without relevant.
  """
  n_rel = jnp.sum(valid, axis=-1)
  denominator = jnp.maximum(n_rel, 1).astype(jnp.float32)
  rank_f = jnp.maximum(ranks, 1).astype(jnp.float32)
  above = valid[:, None, :] & (ranks[:, None, :] < ranks[:, :, None])  # [C, R, R']
  ap = jnp.sum(jnp.where(valid, (1 + jnp.sum(above, axis=-1)) / rank_f, 0.0), axis=-1)
  cut = GRADED_CUTOFFS['recall']
  out = {'map': ap / denominator,
         f'recall@{cut}': jnp.sum(valid & (ranks <= cut), axis=-1) / denominator}

  cut = GRADED_CUTOFFS['ndcg']
  gains = jnp.where(valid, gains, 0.0).astype(jnp.float32)
  discount = 1.0 / jnp.log2(rank_f + 1.0)
  dcg = jnp.sum(jnp.where(valid & (ranks <= cut), gains * discount, 0.0), axis=-1)
  r = gains.shape[1]
  earlier = jnp.arange(r)[None, None, :] < jnp.arange(r)[None, :, None]  # [1, R, R']: r' < r
  ahead = valid[:, None, :] & ((gains[:, None, :] > gains[:, :, None]) |
                               ((gains[:, None, :] == gains[:, :, None]) & earlier))
  ideal_rank = 1 + jnp.sum(ahead, axis=-1).astype(jnp.float32)  # place in the ideal ranking
  ideal = jnp.sum(jnp.where(valid & (ideal_rank <= cut), gains / jnp.log2(ideal_rank + 1.0), 0.0),
                  axis=-1)
  out[f'ndcg@{cut}'] = jnp.where(ideal > 0, dcg / jnp.where(ideal > 0, ideal, 1.0), 0.0)
  return {name: out[name].astype(jnp.float32) for name in GRADED_METRIC_NAMES}


def _metrics_core(scores: jax.Array, relevant: jax.Array,
                  block_size: int) -> dict[str, jax.Array]:
  """Per query metrics of a chunk of queries (`metrics_from_scores`)."""
  ranks = relevant_ranks(scores, relevant, block_size=block_size)
  return metrics_from_ranks(ranks, _valid_relevant(relevant))


def row_chunks(num_rows: int, chunk_size: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
  """Covers rows 0..num_rows-1 with equal chunks of at most `chunk_size` rows, without padding.

  The last chunk starts early enough to end at the last row, so it may overlap the one before it.

  Args:
    num_rows: the number of rows (> 0).
    chunk_size: the most rows per chunk (> 0).

  Returns:
    starts: int32 [num_chunks] first row of each chunk; size: rows per chunk; and for every row
    the chunk and the offset in that chunk that hold its result.
  """
  num_chunks = -(-num_rows // chunk_size)
  size = -(-num_rows // num_chunks)
  starts = np.minimum(np.arange(num_chunks) * size, num_rows - size).astype(np.int32)
  rows = np.arange(num_rows)
  chunk = np.minimum(rows // size, num_chunks - 1)
  return starts, size, chunk, rows - starts[chunk]


def map_row_chunks(fn, arrays: tuple[jax.Array, ...], chunk_size: int) -> dict[str, jax.Array]:
  """Applies `fn` to equal row chunks of `arrays` with `jax.lax.map`; reassembles the outputs.

  Args:
    fn: maps row chunks of `arrays` to a dict of [size, ...] arrays.
    arrays: arrays sharing their leading dimension Q > 0.
    chunk_size: the most rows per call of `fn`.

  Returns:
    fn's dict with every value of shape [Q, ...], in row order.
  """
  starts, size, chunk, offset = row_chunks(arrays[0].shape[0], chunk_size)

  def one_chunk(start):
    return fn(*(jax.lax.dynamic_slice_in_dim(array, start, size, axis=0) for array in arrays))

  out = jax.lax.map(one_chunk, jnp.asarray(starts))
  return {name: value[chunk, offset] for name, value in out.items()}


def _check_inputs(num_queries: int, relevant: jax.Array, chunk_size: int, block_size: int) -> None:
  if relevant.ndim != 2 or relevant.shape[0] != num_queries:
    raise ValueError(f'relevant must be [{num_queries}, R], got {relevant.shape}')
  if num_queries < 1:
    raise ValueError('need at least one query')
  if chunk_size < 1 or block_size < 1:
    raise ValueError(f'chunk_size and block_size must be positive, got {chunk_size}, {block_size}')


@functools.partial(jax.jit, static_argnames=('chunk_size', 'block_size'))
def metrics_from_scores(scores: jax.Array,
                        relevant: jax.Array,
                        *,
                        chunk_size: int = DEFAULT_CHUNK_SIZE,
                        block_size: int = CANDIDATE_BLOCK_SIZE) -> dict[str, jax.Array]:
  """Per query retrieval metrics from a full score matrix.

  Args:
    scores: float [Q, N] finite score of every candidate for every query (higher ranks first).
    relevant: int32 [Q, R] relevant candidate indices per query, padded with -1.
    chunk_size: the most queries processed at once.
    block_size: the most candidates compared at once (see `relevant_ranks`).

  Returns:
    A dict of float32 [Q] arrays: ap, recall@1, recall@10, mrr, ndcg@10, rank_min, rank_max.
  """
  if scores.ndim != 2:
    raise ValueError(f'scores must be [Q, N], got {scores.shape}')
  _check_inputs(scores.shape[0], relevant, chunk_size, block_size)
  return map_row_chunks(lambda s, r: _metrics_core(s, r, block_size),
                         (scores.astype(jnp.float32), relevant.astype(jnp.int32)), chunk_size)


def summarize(per_query: dict[str, jax.Array],
              mask: jax.Array | np.ndarray | None = None) -> dict[str, float]:
  """Means of per query metrics over the queries in `mask`.

  Args:
    per_query: a dict of [Q] arrays, e.g. from `metrics_from_scores` or `metrics_from_ranks`.
    mask: optional bool [Q]: the queries to average over (default all).

  Returns:
    The mean of every metric, plus 'rank_distance' = mean(rank_max - rank_min) when both exist.
  """
  values = {name: np.asarray(value, dtype=np.float64) for name, value in per_query.items()}
  if 'rank_min' in values and 'rank_max' in values:
    values['rank_distance'] = values['rank_max'] - values['rank_min']
  if mask is not None:
    mask = np.asarray(mask, dtype=bool)
    values = {name: value[mask] for name, value in values.items()}
  return {name: float(value.mean()) if value.size else float('nan')
          for name, value in values.items()}
