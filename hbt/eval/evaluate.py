"""Zero-shot retrieval evaluation in the three settings of a parallel benchmark.

Every language's questions and candidate sentences are encoded once. The candidates of all
languages form one pool, each language a segment of it. For each query language a single jitted
pass over the pool gives, for every relevant answer (the question's sentence in each language),
its rank in the whole pool and its rank within its own language, from which:

  monolingual   query language X against the candidates of X           (one relevant)
  cross-lingual query language X against the candidates of Y != X      (one relevant)
  multilingual  query language X against the pool of all languages     (one relevant per language
                that has the question; rank distance = worst - best of their ranks)

Per-pair figures are means over the queries that have an answer in the target language; setting
figures are macro-averages over the pairs (and over query languages for multilingual).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hbt.data import types
from hbt.eval import encode
from hbt.eval import metrics

SETTINGS = ('mono', 'cross', 'multi')


def encode_benchmark(encode_fn, params, tokenizer, benchmark: types.Benchmark, *,
                     batch_tokens: int, multiple: int = 1, progress: bool = True):
  """{lang: (query embeddings [Q, D], candidate embeddings [N, D])}, and the token count."""
  out, tokens = {}, 0
  for lang in benchmark.langs:
    split = benchmark[lang]
    embs = []
    for kind, texts in (('query', split.queries), ('passage', split.candidates)):
      ids = tokenizer.encode(list(texts), kind)
      tokens += sum(len(i) for i in ids)
      embs.append(encode.encode_texts(encode_fn, params, ids, tokenizer.pad_id,
                                      batch_tokens=batch_tokens, max_length=tokenizer.max_length,
                                      multiple=multiple, desc=f'{benchmark.name} {lang} {kind}',
                                      progress=progress))
    out[lang] = tuple(embs)
  return out, tokens


@functools.partial(jax.jit, static_argnames=('chunk_size',))
def _pool_ranks(queries, pool, segments, relevant, chunk_size):
  """(pool ranks, segment ranks) [Q, L] of each query's relevant candidates, chunked over queries."""

  def chunk(q, rel):
    scores = jnp.dot(q, pool.T, precision=jax.lax.Precision.HIGHEST,
                     preferred_element_type=jnp.float32)
    return metrics.segment_ranks(scores, rel, segments)

  num = queries.shape[0]
  padded = -(-num // chunk_size) * chunk_size
  q = jnp.pad(queries, ((0, padded - num), (0, 0))).reshape(-1, chunk_size, queries.shape[1])
  rel = jnp.pad(relevant, ((0, padded - num), (0, 0)), constant_values=-1)
  pool_r, seg_r = jax.lax.map(lambda a: chunk(*a), (q, rel.reshape(-1, chunk_size,
                                                                   relevant.shape[1])))
  return pool_r.reshape(padded, -1)[:num], seg_r.reshape(padded, -1)[:num]


def relevant_matrix(benchmark: types.Benchmark, query_lang: str, offsets: dict[str, int]):
  """int32 [Q, L]: pool index of each query's answer in every language, -1 where it lacks it."""
  split = benchmark[query_lang]
  rel = np.full((len(split.query_ids), len(benchmark.langs)), -1, np.int32)
  for j, lang in enumerate(benchmark.langs):
    target = benchmark[lang]
    for i, qid in enumerate(split.query_ids):
      answer = target.answer_of(qid)
      if answer is not None:
        rel[i, j] = offsets[lang] + answer
  return rel


def score(benchmark: types.Benchmark, embeddings, *, chunk_size: int = 128) -> dict:
  """Per-language, per-pair and macro-averaged metrics from the embeddings of encode_benchmark.

  Scoring is cheap next to encoding: every process scores on its first local device.
  """
  with jax.default_device(jax.local_devices()[0]):
    return _score(benchmark, embeddings, chunk_size)


def _score(benchmark, embeddings, chunk_size):
  langs = benchmark.langs
  sizes = [embeddings[l][1].shape[0] for l in langs]
  offsets = dict(zip(langs, np.cumsum([0] + sizes[:-1]).tolist()))
  pool = jnp.asarray(np.concatenate([embeddings[l][1] for l in langs]))
  segments = jnp.asarray(np.repeat(np.arange(len(langs), dtype=np.int32), sizes))
  pairs, multi = {}, {}
  for query_lang in langs:
    rel = relevant_matrix(benchmark, query_lang, offsets)
    pool_r, seg_r = _pool_ranks(jnp.asarray(embeddings[query_lang][0]), pool, segments,
                                jnp.asarray(rel), chunk_size)
    valid = jnp.asarray(rel >= 0)
    for j, target_lang in enumerate(langs):
      per_query = metrics.metrics_from_ranks(seg_r[:, j:j + 1], valid[:, j:j + 1])
      pairs[f'{query_lang}-{target_lang}'] = metrics.summarize(per_query, rel[:, j] >= 0)
    multi[query_lang] = metrics.summarize(metrics.metrics_from_ranks(pool_r, valid))
  return {'pairs': pairs, 'multi': multi, 'langs': list(langs),
          'summary': summarize_settings(pairs, multi, langs)}


def summarize_settings(pairs: dict, multi: dict, langs) -> dict:
  """Macro averages per setting over `langs` (mono: X-X, cross: X-Y with X != Y, multi: X)."""
  mono = [pairs[f'{l}-{l}'] for l in langs]
  cross = [pairs[f'{a}-{b}'] for a in langs for b in langs if a != b]
  multis = [multi[l] for l in langs]
  mean = lambda rows: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
  return {'mono': mean(mono), 'cross': mean(cross), 'multi': mean(multis)}
