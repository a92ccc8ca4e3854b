"""The evaluation job: encode a benchmark with a model, score it, print and write the report."""

import time

from absl import logging
from etils import epath
import jax

from hbt import io
from hbt import sharding
from hbt.data import squad_r
from hbt.eval import beir
from hbt.eval import evaluate
from hbt.eval import report
from hbt.model import build


def make_encode_fn(module, mesh):
  """jit(params, ids, mask[, num_texts]) -> embeddings, with the batch split over the mesh's
  'data' axis; num_texts (static, positional): the texts of packed rows (see hbt.eval.encode)."""
  batch = sharding.batch_sharding(mesh)
  return jax.jit(lambda params, ids, mask, num_texts=None: module.apply(
      {'params': params}, ids, mask, num_texts=num_texts), static_argnums=3,
                 in_shardings=(None, batch, batch), out_shardings=batch)


def evaluate_model(config, encode_fn, params, tokenizer, mesh, benchmark=None,
                   trec_depth: int | None = None) -> dict:
  """Encodes (with encode_fn from make_encode_fn) and scores config.eval.benchmark on the mesh.

  Reusing one encode_fn for several evaluations (before and after training) compiles each batch
  shape once. Every process must call it (under jax.distributed too); every process gets the
  results: those of evaluate.score (with 'per_query', and 'top' when the TREC depth > 0) plus
  'benchmark', 'model' and 'timing' {encode_s, score_s, tokens, tokens_per_s}. `write_report`
  writes them. trec_depth: candidates kept per query for the TREC run files; None:
  config.eval.trec_depth (0 for an evaluation whose TREC files nobody needs).
  """
  if benchmark is None:
    benchmark = load_eval_benchmark(config)
  if isinstance(benchmark, beir.BeirSet):
    return dict(beir.evaluate_model(encode_fn, params, tokenizer, benchmark,
                                    batch_tokens=config.eval.batch_tokens,
                                    pack_length=config.eval.pack_length, mesh=mesh,
                                    chunk_size=config.eval.chunk_size,
                                    progress=config.eval.progress),
                model=build.describe(config.model))
  start = time.perf_counter()
  embeddings, tokens = evaluate.encode_benchmark(
      encode_fn, params, tokenizer, benchmark,
      batch_tokens=config.eval.batch_tokens, pack_length=config.eval.pack_length,
      multiple=sharding.data_parallel_size(mesh), batch_sharding=sharding.batch_sharding(mesh),
      progress=config.eval.progress)
  encoded = time.perf_counter()
  results = evaluate.score(benchmark, embeddings, mesh=mesh, chunk_size=config.eval.chunk_size,
                           top_k=config.eval.trec_depth if trec_depth is None else trec_depth)
  results['benchmark'] = benchmark.name
  results['model'] = build.describe(config.model)
  results['timing'] = {'encode_s': encoded - start, 'score_s': time.perf_counter() - encoded,
                       'tokens': tokens, 'tokens_per_s': tokens / (encoded - start)}
  logging.info('%s: encoded %s tokens in %.1f s (%s tok/s), scored in %.1f s', benchmark.name,
               f'{tokens:,}', encoded - start, f'{tokens / (encoded - start):,.0f}',
               results['timing']['score_s'])
  return results


def load_eval_benchmark(config):
  """The configured evaluation benchmark (all or config.eval.langs languages), or the
  config.eval.beir_split split of a 'beir:<folder>' benchmark (a beir.BeirSet)."""
  folder = beir.folder_of(config.eval.benchmark)
  if folder is not None:
    return beir.load(folder, config.eval.beir_split)
  return squad_r.load_benchmark(config.eval.benchmark, config.data.dir or None,
                                config.eval.langs or None)


def write_report(workdir, results: dict, tag: str, heatmap: bool = True) -> epath.Path:
  """Writes the files of one evaluation under workdir/eval; returns the JSON path.

  With name = <benchmark>[_tag]: <name>.json (report.json_results: every figure, no arrays),
  <name>.png (mAP heatmap, if `heatmap`), <name>_per_query.npz (report.write_per_query) and, if
  results hold top candidates, trec/<name>/ (report.write_trec). Call it on process 0 only.
  """
  name = results['benchmark'] + (f'_{tag}' if tag else '')
  folder = io.path(workdir) / 'eval'
  io.write_json(folder / f'{name}.json', report.json_results(results))
  if heatmap and 'pairs' in results:  # a parallel benchmark (not BEIR)
    report.write_heatmap(folder / f'{name}.png', results,
                         f'{name}: mAP, query x candidate language')
  report.write_per_query(folder / f'{name}_per_query.npz', results['per_query'])
  if 'top' in results:
    report.write_trec(folder / 'trec' / name, results)
  return folder / f'{name}.json'
