"""Zero-shot retrieval evaluation in the three settings of a parallel benchmark.

Every text of the benchmark is encoded once, in one length-sorted stream. The candidates of all
languages form one pool, each language a segment of it. One jitted pass scores every query of every
language against the pool and counts, for each of the query's relevant answers (its question's
sentence in each language), how many candidates of each language rank ahead of it: `ahead`
[Q, L, L]. Every figure is read off these counts:

  monolingual   query language X against the candidates of X           (one relevant)
  cross-lingual query language X against the candidates of Y != X      (one relevant)
  multilingual  query language X against the pool of all languages     (one relevant per language
                that has the question; rank distance = worst - best of their ranks)

The rank of the answer in language Y among the candidates of a set of languages G is
1 + sum over Z in G of ahead[Y, Z]. That gives the group metric, one definition for every column:

  GROUP METRIC. The figures of a group G of languages (all of them, the languages seen in training,
  the unseen ones) restrict queries, candidates and answers to G: mono is X-X for X in G; cross is
  X-Y for X != Y, both in G; multi is query language X in G against the pool of G's languages only,
  with the answers in G's languages as the relevant ones (rank distance likewise). For G = all
  languages these are the three settings above.

Per-pair figures are means over the queries that have an answer in the target language; setting
figures are macro-averages over the pairs (and over query languages for multilingual).

Scoring splits the queries over all devices of the mesh; each device holds the pool once.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from hbt import sharding
from hbt.data import types
from hbt.eval import encode
from hbt.eval import metrics

SETTINGS = ('mono', 'cross', 'multi')
GROUP_METRIC = ('every setting restricted to the group: mono X-X and cross X-Y with X, Y in the '
                "group; multi: query language X in the group against the pool of the group's "
                'languages only')
# Per-query figures kept for every pair (one relevant: its rank) and every multilingual query.
PAIR_METRICS = ('ap', 'mrr', 'recall@1', 'recall@10', 'ndcg@10')
MULTI_METRICS = PAIR_METRICS + ('rank_min', 'rank_max')
# Candidates of every language compared at once: [chunk, L, L, 128] comparisons per step.
SCORE_BLOCK_SIZE = 128


def encode_benchmark(encode_fn, params, tokenizer, benchmark: types.Benchmark, *,
                     batch_tokens: int, pack_length: int = 0, multiple: int = 1,
                     batch_sharding=None, progress: bool = True):
  """{lang: (query embeddings [Q, D], candidate embeddings [N, D])}, and the token count.

  All texts of the benchmark (every language; questions with the query prefix, candidates with the
  passage prefix) are encoded as one length-sorted stream, so each length bucket ends in at most
  one part-filled batch (packed rows of `pack_length` tokens hold several texts, of any language
  and kind); the embeddings are then scattered back to their language and kind. `pack_length` and
  `batch_sharding` are passed to `encode.encode_texts`.
  """
  token_ids, spans = [], []
  for lang in benchmark.langs:
    split = benchmark[lang]
    for kind, texts in (('query', split.queries), ('passage', split.candidates)):
      start = len(token_ids)
      token_ids += tokenizer.encode(list(texts), kind)
      spans.append((lang, start, len(token_ids)))
  embeddings = encode.encode_texts(encode_fn, params, token_ids, tokenizer.pad_id,
                                   batch_tokens=batch_tokens, max_length=tokenizer.max_length,
                                   pack_length=pack_length, multiple=multiple,
                                   batch_sharding=batch_sharding,
                                   desc=benchmark.name, progress=progress)
  out = {}
  for lang, start, end in spans:
    out.setdefault(lang, []).append(embeddings[start:end])
  return {lang: tuple(embs) for lang, embs in out.items()}, sum(len(i) for i in token_ids)


def relevant_matrix(benchmark: types.Benchmark, query_lang: str, offsets: dict[str, int]):
  """int32 [Q, L]: pool index of each query's answer in every language, -1 where it lacks it."""
  qids = np.asarray(benchmark[query_lang].query_ids)
  rel = np.full((len(qids), len(benchmark.langs)), -1, np.int32)
  for j, lang in enumerate(benchmark.langs):
    target = benchmark[lang]
    known = np.asarray(target.query_ids)
    if not len(known) or not len(qids):
      continue
    order = np.argsort(known, kind='stable')  # a repeated id: its last entry, as answer_of
    at = np.searchsorted(known, qids, side='right', sorter=order) - 1
    found = (at >= 0) & (known[order[np.maximum(at, 0)]] == qids)
    rel[found, j] = offsets[lang] + np.asarray(target.answer)[order[at[found]]]
  return rel


def local_mesh() -> Mesh:
  """A one-device mesh of this process's first local device."""
  return Mesh(np.asarray(jax.local_devices()[:1]), ('data',))


def pool_scores(queries, pool, sizes):
  """float32 [C, L, M]: every query's score against every language's candidates, -inf at padding.

  Args: queries float32 [C, D]; pool float32 [L, M, D] (pool_layout's); sizes int32 [L].
  """
  num_langs, size, dim = pool.shape
  scores = jnp.dot(queries, pool.reshape(-1, dim).T, precision=jax.lax.Precision.HIGHEST,
                   preferred_element_type=jnp.float32).reshape(-1, num_langs, size)
  return jnp.where(jnp.arange(size)[None, :] < sizes[:, None], scores, -jnp.inf)


def pool_layout(benchmark: types.Benchmark, embeddings):
  """The arrays of the device pass: queries of all languages in order, float32 [Q, D]; their
  answers, int32 [Q, L] pool indices l * M + i (-1: none); the pool, float32 [L, M, D], each
  language's candidates zero padded to M, the largest language's count; sizes, int32 [L]."""
  langs = benchmark.langs
  sizes = np.asarray([embeddings[l][1].shape[0] for l in langs], np.int32)
  size = int(sizes.max())
  pool = np.zeros((len(langs), size, embeddings[langs[0]][1].shape[1]), np.float32)
  for j, lang in enumerate(langs):
    pool[j, :sizes[j]] = embeddings[lang][1]
  offsets = {lang: j * size for j, lang in enumerate(langs)}
  queries = np.concatenate([embeddings[l][0] for l in langs]).astype(np.float32)
  relevant = np.concatenate([relevant_matrix(benchmark, l, offsets) for l in langs])
  return queries, relevant, pool, sizes


@functools.partial(jax.jit, static_argnames=('mesh', 'chunk_size', 'top_k', 'block_size'))
def _score_pool(queries, relevant, pool, sizes, *, mesh, chunk_size, top_k,
                block_size=SCORE_BLOCK_SIZE):
  """Per query: `ahead` [Q, R, L] (see metrics.segment_counts) and the top_k of every language.

  Args:
    queries: float32 [Q, D], Q a multiple of the mesh size, split over all its devices.
    relevant: int32 [Q, R] flat pool indices (l * M + i) of the relevant candidates, -1 padded.
    pool: float32 [L, M, D] the candidates of each language, zero padded to M; replicated.
    sizes: int32 [L] the real candidates of each language.
    mesh: the devices to score on.
    chunk_size: the most queries scored at once on a device.
    top_k: 0, or how many best candidates of each language to return (<= M).
    block_size: candidates of every language compared at once (metrics.segment_counts).

  Returns:
    {'ahead': int32 [Q, R, L]} plus, if top_k, 'top_values' float32 [Q, L, top_k] and
    'top_index' int32 [Q, L, top_k] (candidate index in its language; ties: lower index first).
  """
  split = P(mesh.axis_names)

  def local(queries, relevant, pool, sizes):
    def chunk(q, rel):
      scores = pool_scores(q, pool, sizes)
      out = {'ahead': metrics.segment_counts(scores, rel, block_size=block_size)}
      if top_k:
        out['top_values'], out['top_index'] = metrics.top_k(scores, top_k)
      return out

    return metrics.map_row_chunks(chunk, (queries, relevant), chunk_size)

  # check_vma=False: the counting loops carry zeros that are the same on every device.
  return jax.shard_map(local, mesh=mesh, in_specs=(split, split, P(), P()), out_specs=split,
                       check_vma=False)(queries, relevant, pool, sizes)


def score_pool(benchmark: types.Benchmark, embeddings, *, mesh: Mesh | None = None,
               chunk_size: int = 128, top_k: int = 0,
               block_size: int = SCORE_BLOCK_SIZE) -> dict[str, np.ndarray]:
  """The device pass of `score`: every query of every language against the whole pool.

  Args: as `score`; block_size: see metrics.segment_counts.

  Returns:
    Host arrays over the queries of all languages in order (Q in all), on every process:
    'relevant' int32 [Q, L]: each query's answer in every language as a padded pool index
    l * M + i (M: the largest language's candidates), -1 where it has none; 'ahead' int32
    [Q, L, L] (metrics.segment_counts); and if top_k: 'top_values' float32 [Q, L, k] and
    'top_index' int32 [Q, L, k], k = min(top_k, M).
  """
  mesh = mesh or local_mesh()
  queries, relevant, pool, sizes = pool_layout(benchmark, embeddings)
  size = pool.shape[1]
  num_queries = len(queries)
  padded = -(-num_queries // mesh.size) * mesh.size
  split, replicated = NamedSharding(mesh, P(mesh.axis_names)), NamedSharding(mesh, P())
  out = _score_pool(
      sharding.global_array(np.pad(queries, ((0, padded - num_queries), (0, 0))), split),
      sharding.global_array(np.pad(relevant, ((0, padded - num_queries), (0, 0)),
                                   constant_values=-1), split),
      sharding.global_array(pool, replicated), sharding.global_array(sizes, replicated),
      mesh=mesh, chunk_size=chunk_size, top_k=min(top_k, size), block_size=block_size)
  out = {name: sharding.to_host(value)[:num_queries] for name, value in out.items()}
  return dict(out, relevant=relevant)


def score(benchmark: types.Benchmark, embeddings, *, mesh: Mesh | None = None,
          chunk_size: int = 128, top_k: int = 0) -> dict:
  """Per-query, per-pair, per-language and setting figures from the embeddings of encode_benchmark.

  Args:
    benchmark: the benchmark that was encoded.
    embeddings: {lang: (queries [Q, D], candidates [N, D])}.
    mesh: the queries are split over all its devices, each of which holds the pool once; None
      scores on this process's first local device. Every process gets the whole result.
    chunk_size: the most queries scored at once on a device.
    top_k: also keep every query's top_k candidates of each language (TREC run files); 0: none.

  Returns:
    {'langs', 'group_metric', 'pairs', 'multi', 'summary'} (see `group_results`) and 'per_query':
    {'langs', 'sizes' (candidates per language), 'queries' (see `pair_figures`), 'pairs'
    (`pair_figures`), 'multi' (`multi_figures` of all languages)}, plus, when top_k: 'trec_depth' = top_k and 'top' = {lang: {'values':
    float32 [Q, L, k], 'index': int32 [Q, L, k]}}, each query's best k = min(top_k, M)
    candidates in every language, best first (-1 past a language's last candidate).
  """
  langs = benchmark.langs
  out = score_pool(benchmark, embeddings, mesh=mesh, chunk_size=chunk_size, top_k=top_k)
  size = max(embeddings[l][1].shape[0] for l in langs)
  core, top, start = {}, {}, 0
  for lang in langs:
    rows = slice(start, start + len(benchmark[lang].query_ids))
    start = rows.stop
    relevant = out['relevant'][rows]
    answers = np.where(relevant >= 0, relevant - np.arange(len(langs)) * size, -1)
    core[lang] = {'qids': np.asarray(benchmark[lang].query_ids), 'answers': answers,
                  'ahead': out['ahead'][rows]}
    if top_k:
      values = out['top_values'][rows]
      top[lang] = {'values': values,
                   'index': np.where(np.isfinite(values), out['top_index'][rows], -1)}
  sizes = np.asarray([embeddings[l][1].shape[0] for l in langs], np.int32)
  per_query = {'langs': list(langs), 'sizes': sizes, 'queries': core}
  per_query.update(pairs=pair_figures(per_query), multi=multi_figures(per_query, langs))
  results = dict(group_results(per_query, langs), per_query=per_query)
  if top_k:
    results.update(top=top, trec_depth=top_k)
  return results


def pair_figures(core: dict) -> dict:
  """Per-query figures of every pair X-Y: the answer in Y against the candidates of Y only.

  Args:
    core: {'langs': all L languages, 'queries': {lang: {'qids': str [Q], 'answers': int32 [Q, L],
      'ahead': int32 [Q, L, L]}}}: answers[q, y] is the index of query q's answer among the
      candidates of language y (-1 where it has none); ahead[q, y, z] how many candidates of
      language z rank ahead of it (0 where it has none).

  Returns:
    {'X-Y': {'qids', 'rank' int32, PAIR_METRICS float32: [n]}}, over the n queries of X that
    have an answer in Y.
  """
  langs = list(core['langs'])
  pairs = {}
  for x in langs:
    entry = core['queries'][x]
    qids, has = np.asarray(entry['qids']), np.asarray(entry['answers']) >= 0
    ahead = np.asarray(entry['ahead'])
    rank = 1 + np.take_along_axis(ahead, np.arange(len(langs))[None, :, None], axis=2)[..., 0]
    out = metrics.metrics_from_ranks(rank.reshape(-1, 1), has.reshape(-1, 1))
    out = {k: np.asarray(out[k]).reshape(len(qids), -1) for k in PAIR_METRICS}
    for j, y in enumerate(langs):
      keep = has[:, j]
      pairs[f'{x}-{y}'] = {'qids': qids[keep], 'rank': rank[keep, j].astype(np.int32),
                           **{k: v[keep, j] for k, v in out.items()}}
  return pairs


def multi_figures(core: dict, group) -> dict:
  """Per-query multilingual figures of the group: its answers in the pool of its languages only.

  Args:
    core: as `pair_figures`.
    group: the languages of the sub-pool (all of core['langs']: the whole pool).

  Returns:
    {X: {'qids', MULTI_METRICS: [n]}} for X in group, over the n queries of X with an answer in
    the group; ranks are int32.
  """
  langs = list(core['langs'])
  index = [langs.index(l) for l in group]
  multi = {}
  for x in group:
    entry = core['queries'][x]
    qids, valid = np.asarray(entry['qids']), np.asarray(entry['answers'])[:, index] >= 0
    rank = 1 + np.asarray(entry['ahead'])[:, index][:, :, index].sum(axis=-1)
    out = metrics.metrics_from_ranks(rank, valid)
    keep = valid.any(axis=1)
    multi[x] = {'qids': qids[keep], **{k: np.asarray(out[k])[keep] for k in MULTI_METRICS}}
    for k in ('rank_min', 'rank_max'):
      multi[x][k] = multi[x][k].astype(np.int32)
  return multi


def _means(per_query: dict) -> dict[str, float]:
  """metrics.summarize of one pair's or one language's per-query figures."""
  values = {k: v for k, v in per_query.items() if k != 'qids'}
  if 'rank' in values:
    rank = values.pop('rank')
    values.update(rank_min=rank, rank_max=rank)
  return metrics.summarize(values)


def group_results(per_query: dict, group) -> dict:
  """The figures of the languages in `group` under the group metric (see the module docstring).

  Pairs within the group are those of the whole pool; the multilingual figures of a smaller group
  are recomputed from the counts (`multi_figures`).

  Args:
    per_query: results['per_query'] of `score` (or read back by report.read_per_query).
    group: a subset of per_query['langs'].

  Returns:
    {'langs': group, 'group_metric': GROUP_METRIC, 'pairs': {'X-Y': means}, 'multi': {X: means},
    'summary': summarize_settings(pairs, multi, group)}; means of ap, recall@1, recall@10, mrr,
    ndcg@10, rank_min, rank_max and rank_distance.
  """
  group, langs = list(group), list(per_query['langs'])
  if not group or any(l not in langs for l in group):
    raise ValueError(f'group {group} is not a non-empty subset of {langs}')
  multi = per_query['multi'] if set(group) == set(langs) else multi_figures(per_query, group)
  pairs = {f'{x}-{y}': _means(per_query['pairs'][f'{x}-{y}']) for x in group for y in group}
  multi = {lang: _means(multi[lang]) for lang in group}
  return {'langs': group, 'group_metric': GROUP_METRIC, 'pairs': pairs, 'multi': multi,
          'summary': summarize_settings(pairs, multi, group)}


def summarize_settings(pairs: dict, multi: dict, langs) -> dict:
  """Macro averages per setting over `langs`: mono X-X, cross X-Y with X != Y, multi X.

  Under the group metric `multi` must hold the group's own multilingual figures (those of
  `group_results`), not those of a larger pool.
  """
  mean = lambda rows: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
  return {'mono': mean([pairs[f'{l}-{l}'] for l in langs]),
          'cross': mean([pairs[f'{a}-{b}'] for a in langs for b in langs if a != b]),
          'multi': mean([multi[l] for l in langs])}
