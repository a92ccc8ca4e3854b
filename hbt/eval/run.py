"""The evaluation job: encode a benchmark with a model, score it, print and write the report."""

import time

from absl import logging
from etils import epath
import jax

from hbt import io
from hbt import sharding
from hbt.data import squad_r
from hbt.eval import evaluate
from hbt.eval import report
from hbt.model import build


def make_encode_fn(module, mesh):
  """jit(params, ids, mask) -> embeddings, with the batch split over the mesh's 'data' axis."""
  batch = sharding.batch_sharding(mesh)
  return jax.jit(lambda params, ids, mask: module.apply({'params': params}, ids, mask),
                 in_shardings=(None, batch, batch), out_shardings=batch)


def evaluate_model(config, encode_fn, params, tokenizer, mesh, benchmark=None) -> dict:
  """Encodes (with encode_fn from make_encode_fn) and scores config.eval.benchmark.

  Reusing one encode_fn for several evaluations (before and after training) compiles each batch
  shape once.
  """
  if benchmark is None:
    benchmark = load_eval_benchmark(config)
  start = time.perf_counter()
  embeddings, tokens = evaluate.encode_benchmark(
      encode_fn, params, tokenizer, benchmark,
      batch_tokens=config.eval.batch_tokens, multiple=sharding.data_parallel_size(mesh),
      progress=config.eval.progress)
  encoded = time.perf_counter()
  results = evaluate.score(benchmark, embeddings, chunk_size=config.eval.chunk_size)
  results['benchmark'] = benchmark.name
  results['model'] = build.describe(config.model)
  results['timing'] = {'encode_s': encoded - start, 'score_s': time.perf_counter() - encoded,
                       'tokens': tokens, 'tokens_per_s': tokens / (encoded - start)}
  logging.info('%s: encoded %s tokens in %.1f s (%s tok/s), scored in %.1f s', benchmark.name,
               f'{tokens:,}', encoded - start, f'{tokens / (encoded - start):,.0f}',
               results['timing']['score_s'])
  return results


def load_eval_benchmark(config):
  """The configured evaluation benchmark (all or config.eval.langs languages)."""
  return squad_r.load_benchmark(config.eval.benchmark, config.data.dir or None,
                                config.eval.langs or None)


def write_report(workdir, results: dict, tag: str) -> epath.Path:
  """Writes eval/<benchmark>[_tag].json and .png under workdir; returns the JSON path."""
  name = results['benchmark'] + (f'_{tag}' if tag else '')
  folder = io.path(workdir) / 'eval'
  io.write_json(folder / f'{name}.json', results)
  report.write_heatmap(folder / f'{name}.png', results, f'{name}: mAP, query x candidate language')
  return folder / f'{name}.json'
