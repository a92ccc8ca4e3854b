"""The experiment: prepare shards, evaluate zero-shot, train, evaluate again, report."""

import pathlib

from absl import logging
import jax

from hbt import sharding
from hbt.eval import report
from hbt.eval import run as eval_run
from hbt.model import build


def run(config, workdir: str) -> dict:
  """Runs config.mode in workdir; returns the evaluation results (if any)."""
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh)
  model = build.load(config.model)
  if config.mode == 'eval':
    params = jax.device_put(model.params, sharding.replicated(mesh))
    results = eval_run.evaluate_model(config, model.module, params, model.tokenizer, mesh)
    if jax.process_index() == 0:
      print(report.table(results['summary'], f"{results['benchmark']} zero-shot"), flush=True)
      path = eval_run.write_report(workdir, results, '')
      logging.info('wrote %s', path)
    return results
  raise NotImplementedError(config.mode)
