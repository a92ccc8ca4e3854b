"""Benchmarks in the BEIR layout (MIRACL, MLDR, mMARCO subsets, BEIR sets a user downloads).

A folder holds:
  * `corpus.jsonl`: one JSON object per line, {"_id": str, "title": str (optional), "text": str};
  * `queries.jsonl`: {"_id": str, "text": str} per line;
  * `qrels/<split>.tsv`: a header line (`query-id corpus-id score`), then tab-separated
    `query-id corpus-id score` lines; score an integer graded relevance (0: judged not relevant).

Every error names the file and the line. Only the queries that have a qrel of score > 0 are
evaluated (the BEIR convention). A passage is its title and text joined by a space (as BEIR's
dense retrievers do).

Scoring goes through the parallel benchmarks' jitted scorer (`evaluate.score_pool`'s device pass
over a one-segment pool): for every relevant document of a query, the count of documents ranked
ahead of it, hence its rank, without sorting. `metrics.graded_metrics_from_ranks` turns the ranks
and the graded gains into nDCG@10, Recall@100 and mAP, the figures trec_eval (pytrec_eval) gives
for a run that ranks the whole corpus (ties: the lower corpus index first).
"""

import dataclasses
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from hbt import io
from hbt import sharding
from hbt.eval import encode
from hbt.eval import evaluate
from hbt.eval import metrics

PREFIX = 'beir:'  # config.eval.benchmark = 'beir:<folder>' names a BEIR-layout folder.
QRELS_HEADER = ('query-id', 'corpus-id', 'score')


@dataclasses.dataclass(frozen=True)
class BeirSet:
  """One split of a BEIR-layout benchmark.

  Attributes:
    name: the folder's name and the split, e.g. 'scifact_test'.
    doc_ids: corpus ids, in file order.
    passages: 'title text' of each document, aligned with doc_ids.
    query_ids: ids of the evaluated queries (those with a relevant document), in file order.
    queries: their texts.
    qrels: {query id: {doc id: score}} of the evaluated queries, scores as in the file.
  """

  name: str
  doc_ids: tuple[str, ...]
  passages: tuple[str, ...]
  query_ids: tuple[str, ...]
  queries: tuple[str, ...]
  qrels: dict

  def relevant(self) -> tuple[np.ndarray, np.ndarray]:
    """(int32 [Q, R] corpus indices of each query's documents of score > 0, -1 padded;
    float32 [Q, R] their scores as gains, 0 at padding)."""
    index = {d: i for i, d in enumerate(self.doc_ids)}
    rows = [[(index[d], s) for d, s in self.qrels[q].items() if s > 0] for q in self.query_ids]
    width = max(len(r) for r in rows)
    relevant = np.full((len(rows), width), -1, np.int32)
    gains = np.zeros((len(rows), width), np.float32)
    for i, row in enumerate(rows):
      relevant[i, :len(row)] = [d for d, _ in row]
      gains[i, :len(row)] = [s for _, s in row]
    return relevant, gains


def folder_of(benchmark: str) -> str | None:
  """The folder of a 'beir:<folder>' benchmark name; None for any other name."""
  return benchmark[len(PREFIX):] if benchmark.startswith(PREFIX) else None


def files(folder: str | os.PathLike, split: str) -> dict:
  """The three files of a BEIR-layout folder, by role."""
  root = io.path(folder)
  return {'corpus': root / 'corpus.jsonl', 'queries': root / 'queries.jsonl',
          'qrels': root / 'qrels' / f'{split}.tsv'}


def _jsonl(path, required: tuple[str, ...]) -> list[dict]:
  """The objects of a JSON Lines file (hbt.io.read_jsonl); errors name the file and line."""
  records = []
  for number, record in io.read_jsonl(path):
    for field in required:
      value = record.get(field)
      if not isinstance(value, str) or (field == '_id' and not value):
        raise ValueError(f'{path}:{number}: field {field!r} must be a '
                         f'{"non-empty " if field == "_id" else ""}string, got {value!r}')
    if not isinstance(record.get('title', ''), (str, type(None))):
      raise ValueError(f'{path}:{number}: field \'title\' must be a string, got '
                       f'{record["title"]!r}')
    records.append(record)
  return records


def _unique_ids(records: list[dict], path) -> tuple[str, ...]:
  ids, seen = [], set()
  for record in records:
    if record['_id'] in seen:
      raise ValueError(f'{path}: id {record["_id"]!r} appears twice')
    seen.add(record['_id'])
    ids.append(record['_id'])
  return tuple(ids)


def _qrels(path, doc_ids: set, query_ids: set) -> dict:
  """{query id: {doc id: score}} of a qrels TSV; errors name the file and line."""
  lines = path.read_text(encoding='utf-8').splitlines()
  if not lines or tuple(lines[0].strip().split('\t')) != QRELS_HEADER:
    raise ValueError(f'{path}:1: expected the header {chr(9).join(QRELS_HEADER)!r}, got '
                     f'{lines[0] if lines else ""!r}')
  qrels = {}
  for number, line in enumerate(lines[1:], 2):
    if not line.strip():
      continue
    parts = line.rstrip('\r\n').split('\t')
    if len(parts) != 3:
      raise ValueError(f'{path}:{number}: expected 3 tab-separated fields, got {len(parts)}')
    qid, did, score = parts
    try:
      value = int(score)
    except ValueError:
      raise ValueError(f'{path}:{number}: score must be an integer, got {score!r}') from None
    if qid not in query_ids:
      raise ValueError(f'{path}:{number}: query {qid!r} is not in queries.jsonl')
    if did not in doc_ids:
      raise ValueError(f'{path}:{number}: document {did!r} is not in corpus.jsonl')
    if did in qrels.setdefault(qid, {}):
      raise ValueError(f'{path}:{number}: ({qid!r}, {did!r}) is judged twice')
    qrels[qid][did] = value
  return qrels


def load(folder: str | os.PathLike, split: str = 'test') -> BeirSet:
  """Reads one split of a BEIR-layout folder.

  Raises:
    FileNotFoundError: a file of the layout is missing (names it).
    ValueError: a malformed line (names file and line), a duplicate id, a qrel naming an unknown
      query or document, or no query with a relevant document.
  """
  paths = files(folder, split)
  for path in paths.values():
    if not path.exists():
      raise FileNotFoundError(f'{path} is missing: {folder} is not a BEIR-layout folder with '
                              f'split {split!r} (corpus.jsonl, queries.jsonl, qrels/{split}.tsv)')
  corpus = _jsonl(paths['corpus'], ('_id', 'text'))
  queries = _jsonl(paths['queries'], ('_id', 'text'))
  doc_ids, query_ids = _unique_ids(corpus, paths['corpus']), _unique_ids(queries, paths['queries'])
  qrels = _qrels(paths['qrels'], set(doc_ids), set(query_ids))
  kept = [(q['_id'], q['text']) for q in queries
          if any(s > 0 for s in qrels.get(q['_id'], {}).values())]
  if not kept:
    raise ValueError(f'{paths["qrels"]}: no query has a document of score > 0')
  passages = tuple(' '.join(t for t in (d.get('title') or '', d['text']) if t) for d in corpus)
  name = f'{io.path(folder).name}_{split}'
  return BeirSet(name=name, doc_ids=doc_ids, passages=passages,
                 query_ids=tuple(q for q, _ in kept), queries=tuple(t for _, t in kept),
                 qrels={q: qrels[q] for q, _ in kept})


def relevant_ranks(queries: np.ndarray, corpus: np.ndarray, relevant: np.ndarray, *, mesh=None,
                   chunk_size: int = 128) -> np.ndarray:
  """int32 [Q, R] rank (1-based, whole corpus, ties: lower index first) of every relevant document
  by dot product, through `evaluate`'s jitted pool scorer; 0 at padding."""
  mesh = mesh or evaluate.local_mesh()
  num_queries = len(queries)
  padded = -(-num_queries // mesh.size) * mesh.size
  split, replicated = NamedSharding(mesh, P(mesh.axis_names)), NamedSharding(mesh, P())
  out = evaluate._score_pool(  # pylint: disable=protected-access
      sharding.global_array(np.pad(queries.astype(np.float32),
                                   ((0, padded - num_queries), (0, 0))), split),
      sharding.global_array(np.pad(relevant, ((0, padded - num_queries), (0, 0)),
                                   constant_values=-1), split),
      sharding.global_array(corpus.astype(np.float32)[None], replicated),
      sharding.global_array(np.asarray([len(corpus)], np.int32), replicated),
      mesh=mesh, chunk_size=chunk_size, top_k=0)
  ahead = sharding.to_host(out['ahead'])[:num_queries, :, 0]
  return np.where(relevant >= 0, 1 + ahead, 0).astype(np.int32)


def score(beir_set: BeirSet, queries: np.ndarray, corpus: np.ndarray, *, mesh=None,
          chunk_size: int = 128) -> dict:
  """Per-query and mean nDCG@10, Recall@100 and mAP of query embeddings [Q, D] against the corpus
  embeddings [N, D].

  Returns:
    {'benchmark', 'summary': {metric: mean}, 'per_query': {'qids', metric: float32 [Q]}}.
  """
  relevant, gains = beir_set.relevant()
  ranks = relevant_ranks(queries, corpus, relevant, mesh=mesh, chunk_size=chunk_size)
  per_query = jax.device_get(metrics.graded_metrics_from_ranks(
      jnp.asarray(ranks), jnp.asarray(gains), jnp.asarray(relevant >= 0)))
  return {'benchmark': beir_set.name,
          'summary': {k: float(np.mean(v)) for k, v in per_query.items()},
          'per_query': {'qids': np.asarray(beir_set.query_ids), **per_query}}


def evaluate_model(encode_fn, params, tokenizer, beir_set: BeirSet, *, batch_tokens: int,
                   mesh, pack_length: int = 0, chunk_size: int = 128,
                   progress: bool = True) -> dict:
  """Encodes the queries and the corpus (one length-sorted stream), scores them (`score`).

  Every process calls it; every process gets the results, with 'timing' as `run.evaluate_model`.
  """
  start = time.perf_counter()
  token_ids = tokenizer.encode(list(beir_set.queries), 'query')
  token_ids += tokenizer.encode(list(beir_set.passages), 'passage')
  embeddings = encode.encode_texts(
      encode_fn, params, token_ids, tokenizer.pad_id, batch_tokens=batch_tokens,
      max_length=tokenizer.max_length, pack_length=pack_length,
      multiple=sharding.data_parallel_size(mesh),
      batch_sharding=sharding.batch_sharding(mesh), desc=beir_set.name, progress=progress)
  encoded = time.perf_counter()
  num_queries = len(beir_set.queries)
  results = score(beir_set, embeddings[:num_queries], embeddings[num_queries:], mesh=mesh,
                  chunk_size=chunk_size)
  tokens = sum(len(t) for t in token_ids)
  results['timing'] = {'encode_s': encoded - start, 'score_s': time.perf_counter() - encoded,
                       'tokens': tokens, 'tokens_per_s': tokens / (encoded - start)}
  logging.info('%s: %s', beir_set.name,
               ', '.join(f'{k} {v:.4f}' for k, v in results['summary'].items()))
  return results
