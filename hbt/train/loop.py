"""The experiment: prepare shards, evaluate zero-shot, train, evaluate again, report.

`run(config, workdir)` follows config.mode:
  prepare  write (or reuse) the tokenised hybrid batch shards of every training step;
  train    train from the shards, resuming from the latest checkpoint in workdir;
  eval     evaluate the latest checkpoint in workdir, or the pretrained model if there is none;
  all      prepare, evaluate the pretrained model, train, evaluate the trained model, and print
           both tables side by side (plus the languages the training never saw).
"""

import hashlib
import pathlib
import time

from absl import logging
from clu import metric_writers
import jax
import numpy as np

from hbt import io
from hbt import sharding
from hbt.batches import input_pipeline
from hbt.batches import sampler as sampler_lib
from hbt.batches import shards
from hbt.data import overlap
from hbt.data import pairs as pairs_lib
from hbt.data import sources
from hbt.data import squad_r
from hbt.eval import evaluate
from hbt.eval import report
from hbt.eval import run as eval_run
from hbt.model import build
from hbt.train import checkpoint
from hbt.train import step as step_lib

ARRAY_SUFFIXES = ('_tokens', '_mask', '_group')  # batch arrays the step gets


def training_pairs(config) -> tuple[pairs_lib.PairSet, pairs_lib.PairSet]:
  """(train, validation) pairs of config.data.train, split by parallel id."""
  d = config.data
  if d.train in sources.SOURCES:
    pairs = pairs_lib.from_benchmark(
        squad_r.load_benchmark(d.train, d.dir or None, d.train_langs or None))
  else:
    pairs = pairs_lib.from_jsonl(d.train)
  return pairs_lib.split_ids(pairs, d.val_fraction, config.seed)


def make_sampler(config, pairs: pairs_lib.PairSet) -> sampler_lib.Sampler:
  """The configured batch sampler over the training pairs."""
  t = config.train
  return sampler_lib.Sampler(pairs, t.batch_size, t.strategy, t.alpha, t.lang_sampling,
                             t.lang_temperature, config.seed, t.pair_sampling)


def shard_fields(config) -> dict:
  """Everything that determines the training batches (hashed to name the shard folder)."""
  d, t, m = config.data, config.train, config.model
  train = d.train
  if train not in sources.SOURCES:  # a JSONL file: its content decides the batches
    train = {'path': train, 'sha256': hashlib.sha256(pathlib.Path(train).read_bytes()).hexdigest()}
  return {'train': train, 'train_langs': d.train_langs, 'val_fraction': d.val_fraction,
          'seed': config.seed, 'strategy': t.strategy, 'alpha': t.alpha,
          'lang_sampling': t.lang_sampling, 'lang_temperature': t.lang_temperature,
          'pair_sampling': t.pair_sampling,
          'model': {'source': m.source, 'checkpoint': m.checkpoint,
                    'query_prefix': m.query_prefix, 'passage_prefix': m.passage_prefix}}


# Train and model fields that change the updates (the batches are covered by the shard manifest).
UPDATE_FIELDS = ('learning_rate', 'weight_decay', 'warmup_steps', 'grad_clip_norm',
                 'loss_temperature', 'symmetric_loss', 'freeze_embeddings')


def run_fields(config, shard_dir: pathlib.Path) -> dict:
  """What a run's checkpoints depend on: its batches (shard manifest) and its update rule."""
  manifest = input_pipeline.read_manifest(shard_dir)
  return {'batches': {**manifest['fields'], **manifest['prepare']},
          'train': {k: config.train[k] for k in UPDATE_FIELDS},
          'model': {'dropout_rate': config.model.dropout_rate, 'pooling': config.model.pooling}}


def prepare(config, workdir: pathlib.Path, tokenizer, train_pairs) -> pathlib.Path:
  """Writes (or reuses) the shards of every training step; returns their folder."""
  t = config.train
  return shards.prepare(workdir / 'shards', shard_fields(config), make_sampler(config, train_pairs),
                        train_pairs, tokenizer, t.steps, t.max_query_length,
                        t.max_passage_length, t.hard_negatives, progress=config.eval.progress)


def validation_batches(config, val_pairs, tokenizer, mesh) -> list[dict]:
  """Fixed validation batches: mixed-language pairs (x_x) of held-out ids, same for every run."""
  t = config.train
  if len(val_pairs) == 0:
    return []
  size = min(t.batch_size, len(val_pairs.all_ids()))
  size -= size % sharding.data_parallel_size(mesh)
  if size < 2:
    return []
  sampler = sampler_lib.Sampler(val_pairs, size, 'x_x', seed=config.seed + 1)
  out = []
  for s in range(t.val_batches):
    sides = shards.encode_batch(sampler.batch(s), val_pairs, tokenizer, t.max_query_length,
                                t.max_passage_length, t.hard_negatives)
    out.append({f'{name}{suffix}': getattr(side, suffix[1:])
                for name, side in sides.items() for suffix in ARRAY_SUFFIXES})
  return out


def _global_batch(batch: dict, mesh) -> dict:
  """This process's rows of a global batch -> global jax arrays split over 'data'."""
  spec = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(spec, v) for k, v in batch.items()
          if k.endswith(ARRAY_SUFFIXES)}


def validate(eval_fn, state, batches, mesh) -> dict:
  """Mean validation loss and in-batch accuracy over the fixed batches."""
  results = [jax.device_get(eval_fn(state, _global_batch(b, mesh))) for b in batches]
  return {f'val_{k}': float(np.mean([r[k] for r in results])) for k in results[0]}


def init_state(config, model, mesh):
  """(TrainState from the pretrained params, its shardings, the optimizer)."""
  tx = step_lib.make_optimizer(config.train)
  shardings = step_lib.state_shardings(model.module, tx, mesh, config.mesh.rules,
                                       config.train.freeze_embeddings)
  return step_lib.create_state(model.params, tx, shardings, config.train.freeze_embeddings), \
      shardings, tx


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def train(config, workdir: pathlib.Path, model, mesh, shard_dir: pathlib.Path, val_batches):
  """Trains from the shards, resuming from the latest checkpoint; returns the final state."""
  t = config.train
  state, shardings, tx = init_state(config, model, mesh)
  checkpoint.bind_fields(workdir, run_fields(config, shard_dir))
  mngr = checkpoint.manager(workdir, t.keep_checkpoints)
  state = checkpoint.restore_latest(mngr, state)
  start = int(state.step)
  if start:
    logging.info('resuming from the checkpoint at step %d', start)
  train_fn = step_lib.jit_train_step(model.module, tx, shardings, mesh, t, config.seed,
                                     config.mesh.rules)
  eval_fn = step_lib.jit_eval_step(model.module, shardings, mesh, t, config.mesh.rules)
  writer = metric_writers.create_default_writer(str(workdir / 'tensorboard'),
                                                just_logging=jax.process_index() > 0)
  data = input_pipeline.as_numpy(input_pipeline.make_dataset(
      shard_dir, start_step=start, process_index=jax.process_index(),
      process_count=jax.process_count()))
  tick, tick_step, started = time.perf_counter(), start, time.perf_counter()
  for batch in data:
    step = int(batch['step'])
    state, metrics = train_fn(state, _global_batch(batch, mesh))
    metrics = jax.device_get(metrics)
    done = step + 1
    if not np.isfinite(metrics['loss']):
      raise FloatingPointError(
          f'loss is {metrics["loss"]} at step {step} ({batch["kind"]} batch): stopping. The last '
          f'good checkpoint is step {mngr.latest_step()} in {workdir / "checkpoints"}; lower '
          'config.train.learning_rate or raise config.train.loss_temperature.')
    val = validate(eval_fn, state, val_batches, mesh) if val_batches and (
        done % t.val_every == 0 or done == t.steps) else {}
    if done % t.log_every == 0 or done == t.steps or val:
      now = time.perf_counter()
      rate = (done - tick_step) * t.batch_size / (now - tick)
      scalars = {**{k: float(v) for k, v in metrics.items()}, **val, 'pairs_per_s': rate,
                 'learning_rate': float(step_lib.learning_rate_schedule(t)(step))}
      writer.write_scalars(done, scalars)
      if jax.process_index() == 0:
        eta = (t.steps - done) * t.batch_size / max(rate, 1e-9)
        extra = ''.join(f' {k} {v:.4f}' for k, v in val.items())
        print(f'step {done}/{t.steps} [{batch["kind"]:>5}] loss {scalars["loss"]:.4f} '
              f'acc {scalars["accuracy"]:.3f}{extra} | {rate:.1f} pairs/s | '
              f'ETA {_eta(eta)}', flush=True)
      tick, tick_step = now, done
    if done % t.checkpoint_every == 0 or done == t.steps:
      checkpoint.save(mngr, state, val.get('val_loss'))
  writer.flush()
  logging.info('trained steps %d..%d in %.1f s', start, t.steps, time.perf_counter() - started)
  return state, mngr


def _print(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def run(config, workdir: str) -> dict:
  """Runs config.mode in workdir; returns the evaluation results (if any)."""
  workdir = pathlib.Path(workdir)
  started = time.perf_counter()
  mesh = sharding.make_mesh(config.mesh)
  model = build.load(config.model)
  if config.mode == 'eval':
    return _eval_only(config, workdir, model, mesh)

  train_pairs, val_pairs = training_pairs(config)
  shard_dir = prepare(config, workdir, model.tokenizer, train_pairs)
  logging.info('shards: %s', shard_dir)
  if config.mode == 'prepare':
    _print(f'shards ready: {shard_dir}')
    return {}

  results = {}
  encode_fn = eval_run.make_encode_fn(model.module, mesh)
  benchmark = eval_run.load_eval_benchmark(config) if config.mode == 'all' else None
  if config.mode == 'all':
    results['overlap'] = overlap.sentence_overlap(train_pairs, benchmark)
    total = results['overlap']['total']
    _print(f'training pairs share {total["shared"]} exact sentences with the {total["eval"]} of '
           f'{benchmark.name} ({total["shared_queries"]} queries, {total["shared_candidates"]} '
           'candidates)')
    params = jax.device_put(model.params, sharding.replicated(mesh))
    results['before'] = eval_run.evaluate_model(config, encode_fn, params, model.tokenizer, mesh,
                                                benchmark)
    del params
  trained_at = time.perf_counter()
  state, _ = train(config, workdir, model, mesh, shard_dir,
                   validation_batches(config, val_pairs, model.tokenizer, mesh))
  results['train_s'] = time.perf_counter() - trained_at
  if config.mode == 'all':
    results['after'] = eval_run.evaluate_model(config, encode_fn,
                                               step_lib.merge_params(state), model.tokenizer,
                                               mesh, benchmark)
    results['wall_s'] = time.perf_counter() - started
    _report(workdir, results, train_pairs.langs)
  return results


def _eval_only(config, workdir, model, mesh) -> dict:
  """Evaluates the latest checkpoint in workdir if any, else the pretrained model."""
  params, tag = jax.device_put(model.params, sharding.replicated(mesh)), 'zero_shot'
  if (workdir / 'checkpoints').exists():
    state, _, _ = init_state(config, model, mesh)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
      state = checkpoint.restore_latest(mngr, state)
      params, tag = step_lib.merge_params(state), f'step{int(state.step)}'
  results = eval_run.evaluate_model(config, eval_run.make_encode_fn(model.module, mesh), params,
                                     model.tokenizer, mesh)
  _print(report.table(results['summary'], f"{results['benchmark']} ({tag})"))
  if jax.process_index() == 0:
    logging.info('wrote %s', eval_run.write_report(workdir, results, ''))
  return results


def _report(workdir: pathlib.Path, results: dict, train_langs) -> None:
  """Prints before/after tables side by side (all, seen and unseen languages); writes files."""
  before, after = results['before'], results['after']
  langs = before['langs']
  groups = {'all languages': langs,
            'seen in training': [l for l in langs if l in train_langs],
            'unseen in training': [l for l in langs if l not in train_langs]}
  summary = {}
  for name, group in groups.items():
    if not group:
      continue
    summary[name] = {when: evaluate.group_results(r['per_query'], group)['summary']
                     for when, r in (('before', before), ('after', after))}
    _print(report.side_by_side(
        report.table(summary[name]['before'], f'{before["benchmark"]} before ({name}: '
                     f'{",".join(group)})'),
        report.table(summary[name]['after'], 'after training')))
  _print(f'group metric: {evaluate.GROUP_METRIC}')
  _print(f'wall time: {results["wall_s"]:.0f} s (training {results["train_s"]:.0f} s)')
  if jax.process_index() == 0:
    eval_run.write_report(workdir, before, 'before')
    eval_run.write_report(workdir, after, 'after')
    io.write_json(workdir / 'eval' / 'summary.json',
                      {'groups': {k: list(v) for k, v in groups.items()}, 'summary': summary,
                       'sentence_overlap': results['overlap'],
                       'group_metric': evaluate.GROUP_METRIC,
                       'wall_s': results['wall_s'], 'train_s': results['train_s']})
