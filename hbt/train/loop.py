"""The experiment: prepare the shards, then train with evaluators as hooks (`train_and_evaluate`).

`run(config, workdir)` follows config.mode:
  prepare  write (or reuse) the tokenised hybrid batch shards of every training step;
  train    train from the shards (resuming from the latest checkpoint), with the validation
           evaluators of config.evals;
  eval     run the benchmark evaluators of config.evals once, on the latest checkpoint in workdir
           or the pretrained model;
  all      train with every evaluator of config.evals, then log the benchmark tables of the first
           and the last step side by side (all languages, seen and unseen in training).

The loop body is the train step and a list of hooks (flax examples/wmt, big_vision): clu's
ReportProgress (rate, ETA) and Profile, one PeriodicCallback per evaluator (step 0, every N, last
step) and one for the training metrics; orbax decides when to checkpoint. Every value goes to one
metric writer: the console (absl logging), TensorBoard (workdir/tensorboard) and
workdir/metrics.jsonl (see `JsonlWriter`), from process 0 only.

Files of a run (workdir may be gs://):
  metrics.jsonl               every scalar, one JSON object per write: {"step": N, "<name>": v}
  eval/<bench>_before.json    full results of the benchmark <bench> at step 0 (.png heatmap),
  eval/<bench>_step<N>.json   ... at step N, eval/<bench>_after.json (.png) at the last step,
  eval/<bench>.json (.png)    ... in eval mode (see hbt/eval/evaluators.py);
  eval/summary.json           the before/after tables (mode all), the batch mix, wall times;
  checkpoints/, shards/, tensorboard/.
"""

import hashlib
import json
import pathlib
import threading
import time

from absl import logging
from clu import metric_writers
from clu import periodic_actions
from etils import epath
import jax
import numpy as np

from hbt import io
from hbt import sharding
from hbt.batches import buckets
from hbt.batches import clusters as clusters_lib
from hbt.batches import input_pipeline
from hbt.batches import sampler as sampler_lib
from hbt.batches import shards
from hbt.data import overlap
from hbt.data import pairs as pairs_lib
from hbt.data import sources
from hbt.data import squad_r
from hbt.eval import encode
from hbt.eval import evaluate
from hbt.eval import evaluators as evaluators_lib
from hbt.eval import report
from hbt.eval import run as eval_run
from hbt.model import build
from hbt.train import checkpoint
from hbt.train import step as step_lib

METRICS_FILE = 'metrics.jsonl'


def training_pairs(config) -> tuple[pairs_lib.PairSet, pairs_lib.PairSet]:
  """(train, validation) pairs of config.data.train, split by parallel id."""
  d = config.data
  if d.train in sources.SOURCES:
    pairs = pairs_lib.from_benchmark(
        squad_r.load_benchmark(d.train, d.dir or None, d.train_langs or None))
  else:
    pairs = pairs_lib.from_jsonl(d.train)
    if d.train_langs:
      langs = sources.split_langs(d.train_langs)
      missing = [lang for lang in langs if lang not in pairs.langs]
      if missing:
        raise ValueError(f'config.data.train_langs: {d.train} has no pairs in '
                         f'{", ".join(missing)} (it has {", ".join(pairs.langs)})')
      pairs = pairs.in_langs(langs)
  return pairs_lib.split_ids(pairs, d.val_fraction, config.seed)


CLUSTERS_FILE = 'clusters.json'  # the run's language clusters (`lang_clusters`)


def _clusters(config, clusters: dict | None) -> dict | None:
  """{lang: cluster} of the run: `clusters` (from `lang_clusters`) if given, else the config's."""
  t = config.train
  if clusters is not None or not t.lang_clusters:
    return clusters
  if t.lang_clusters == clusters_lib.MODEL:
    raise ValueError("config.train.lang_clusters='model' is computed by loop.lang_clusters; "
                     'pass its result')
  return clusters_lib.parse(t.lang_clusters, 'config.train.lang_clusters')


def lang_clusters(config, model, mesh, pairs: pairs_lib.PairSet, workdir,
                  encode_fn=None) -> dict | None:
  """The run's language clusters {lang: cluster}, or None without config.train.lang_clusters.

  A table or spec is parsed. 'model' is computed from the base model (hbt.batches.clusters): the
  training positives of the first config.train.cluster_sentences ids that each pair of languages
  shares, encoded with the pretrained params; once per run: workdir/clusters.json is reused when
  it was computed from the same model, languages and settings. Either way the clusters are logged
  and written to workdir/clusters.json: {'source': 'config' | 'model', 'spec', 'clusters', and for
  'model' the 'inputs', 'langs', 'similarity' [L, L] and 'shared_ids' per 'a-b' pair}.
  """
  t = config.train
  if not t.lang_clusters:
    return None
  file = io.path(workdir) / CLUSTERS_FILE
  if t.lang_clusters != clusters_lib.MODEL:
    clusters = _clusters(config, None)
    out = {'source': 'config', 'spec': clusters_lib.format_spec(clusters), 'clusters': clusters}
  else:
    inputs = {'model': build.describe(config.model), 'langs': sorted(pairs.langs),
              'num_clusters': t.cluster_count, 'sentences': t.cluster_sentences}
    out = io.read_json(file) if file.exists() else {}
    if out.get('inputs') != inputs:
      out = _model_clusters(config, model, mesh, pairs, encode_fn, inputs)
  logging.info('language clusters (%s): %s', out['source'], out['spec'])
  if jax.process_index() == 0:
    io.write_json(file, out)
  return out['clusters']


def _model_clusters(config, model, mesh, pairs, encode_fn, inputs: dict) -> dict:
  """clusters.json of config.train.lang_clusters='model' (see `lang_clusters`)."""
  t = config.train
  shared = clusters_lib.shared_ids(pairs, t.cluster_sentences)
  keys = sorted({(lang, i) for pair, ids in shared.items() for lang in pair for i in ids})
  encode_fn = encode_fn or eval_run.make_encode_fn(model.module, mesh)
  vectors = encode.encode_texts(
      encode_fn, model.params,
      model.tokenizer.encode([pairs.positive(lang, i) for lang, i in keys], 'passage'),
      model.tokenizer.pad_id, batch_tokens=config.eval.batch_tokens,
      max_length=model.tokenizer.max_length, pack_length=config.eval.pack_length,
      multiple=sharding.data_parallel_size(mesh),
      batch_sharding=sharding.batch_sharding(mesh), desc='clusters',
      progress=config.eval.progress)
  langs, similarity = clusters_lib.similarity(dict(zip(keys, vectors)), shared)
  try:
    clusters = clusters_lib.from_similarity(langs, similarity, t.cluster_count)
  except ValueError as e:
    raise ValueError(f'config.train.cluster_count={t.cluster_count}: {e} (the training '
                     f'languages: {",".join(langs)})') from None
  logging.info('language similarity (cosine of mean embeddings of %d parallel sentences per '
               'pair at most, %d encoded):\n%s', t.cluster_sentences, len(keys),
               '\n'.join(f'{a}  ' + ' '.join(f'{v:.3f}' for v in row)
                         for a, row in zip(langs, similarity)))
  return {'source': 'model', 'spec': clusters_lib.format_spec(clusters), 'clusters': clusters,
          'inputs': inputs, 'langs': langs, 'similarity': similarity.round(6).tolist(),
          'shared_ids': {f'{a}-{b}': len(ids) for (a, b), ids in shared.items()}}


def make_sampler(config, pairs: pairs_lib.PairSet,
                 clusters: dict | None = None) -> sampler_lib.Sampler:
  """The configured batch sampler over the training pairs (`clusters`: from `lang_clusters`)."""
  t = config.train
  return sampler_lib.Sampler(pairs, t.batch_size, t.strategy, t.alpha, t.lang_sampling,
                             t.lang_temperature, config.seed, t.pair_sampling,
                             _clusters(config, clusters), t.cluster_p_in)


def shard_fields(config, clusters: dict | None = None) -> dict:
  """Everything that determines the training batches (hashed to name the shard folder)."""
  d, t, m = config.data, config.train, config.model
  clusters = _clusters(config, clusters)
  train = d.train
  if train not in sources.SOURCES:  # a JSONL file: its content decides the batches
    train = {'path': train, 'sha256': hashlib.sha256(pathlib.Path(train).read_bytes()).hexdigest()}
  return {'train': train, 'train_langs': d.train_langs, 'val_fraction': d.val_fraction,
          'seed': config.seed, 'strategy': t.strategy, 'alpha': t.alpha,
          'lang_sampling': t.lang_sampling, 'lang_temperature': t.lang_temperature,
          'pair_sampling': t.pair_sampling,
          'model': {'source': m.source, 'checkpoint': m.checkpoint,
                    'query_prefix': m.query_prefix, 'passage_prefix': m.passage_prefix},
          # Only when set, so the shards of runs without clusters keep their names.
          **({'lang_clusters': clusters_lib.format_spec(clusters),
              'cluster_p_in': t.cluster_p_in} if clusters else {})}


# Train and model fields that change the updates (the batches are covered by the shard manifest).
UPDATE_FIELDS = ('learning_rate', 'weight_decay', 'warmup_steps', 'grad_clip_norm',
                 'loss_temperature', 'symmetric_loss', 'freeze_embeddings',
                 'parallel_query_weight', 'parallel_passage_weight', 'adversarial')


def run_fields(config, shard_dir: epath.Path) -> dict:
  """What a run's checkpoints depend on: its batches (shard manifest) and its update rule."""
  manifest = input_pipeline.read_manifest(shard_dir)
  return {'batches': {**manifest['fields'], **manifest['prepare']},
          'train': {k: (v.to_dict() if hasattr(v, 'to_dict') else v)
                    for k, v in ((k, config.train[k]) for k in UPDATE_FIELDS)},
          'model': {'dropout_rate': config.model.dropout_rate, 'pooling': config.model.pooling}}


def prepare(config, workdir: epath.Path, tokenizer, train_pairs,
            clusters: dict | None = None) -> epath.Path:
  """Writes (or reuses) the shards of every training step; returns their folder."""
  t = config.train
  return shards.prepare(io.path(workdir) / 'shards', shard_fields(config, clusters),
                        make_sampler(config, train_pairs, clusters), train_pairs, tokenizer,
                        t.steps, t.max_query_length, t.max_passage_length, t.hard_negatives,
                        progress=config.eval.progress, parallel=parallel_sides(config),
                        pack_texts=t.pack_texts)


def parallel_sides(config) -> bool:
  """Whether the batches need the parallel sides 'query2' / 'positive2' (an alignment term)."""
  return config.train.parallel_query_weight > 0 or config.train.parallel_passage_weight > 0


def init_state(config, model, mesh):
  """(TrainState from the pretrained params, its shardings, the optimizer)."""
  tx = step_lib.make_optimizer(config.train)
  heads = step_lib.heads(config.train, model.module, config.seed)
  shardings = step_lib.state_shardings(model.module, tx, mesh, config.mesh.rules,
                                       config.train.freeze_embeddings, heads)
  return step_lib.create_state({**model.params, **heads}, tx, shardings,
                               config.train.freeze_embeddings), shardings, tx


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars to one JSON-lines file, rewritten atomically on every write (works on gs://).

  Each line is {"step": N, "<name>": value, ...}, one per write_scalars call, in write order.
  Reopened after a restart at step k, the lines of steps after k (written by the run that died)
  are dropped, since the resumed run writes them again.
  """

  def __init__(self, path, resume_step: int = 0):
    self._path = io.path(path)
    self._lock = threading.Lock()
    self._lines = []
    if self._path.exists():
      for _, record in io.read_jsonl(self._path):
        if record['step'] <= resume_step:
          self._lines.append(json.dumps(record, sort_keys=True))

  def write_scalars(self, step, scalars):
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with self._lock:
      self._lines.append(json.dumps(record, sort_keys=True))
      io.write_atomic(self._path, ('\n'.join(self._lines) + '\n').encode('utf-8'))

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def make_writer(workdir, resume_step: int) -> metric_writers.MetricWriter:
  """Console (absl logging), TensorBoard and metrics.jsonl, from process 0 only."""
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  workdir = io.path(workdir)
  return metric_writers.MultiWriter([
      metric_writers.LoggingWriter(),
      metric_writers.SummaryWriter(str(workdir / 'tensorboard')),
      JsonlWriter(workdir / METRICS_FILE, resume_step)])


def _nan_message(loss, step, kind, mngr, workdir) -> str:
  mngr.wait_until_finished()
  return (f'loss is {loss} at step {step} ({kind} batch): stopping. The last good checkpoint is '
          f'step {mngr.latest_step()} in {checkpoint.checkpoint_dir(workdir)}; lower '
          'config.train.learning_rate or raise config.train.loss_temperature.')


def train_and_evaluate(config, workdir, model=None, mesh=None) -> dict:
  """Prepares the shards and trains, with the evaluators of config.evals as hooks.

  Resumes from the latest checkpoint in workdir. Returns {'train_s', 'steps': (first, last),
  'evaluators': [the evaluators, holding their benchmark results by step], 'train_langs',
  'describe': the batch mix of the shards, 'overlap': {evaluator: sentence overlap with the
  training pairs}, 'state': the final TrainState}.
  """
  workdir = io.path(workdir)
  t = config.train
  mesh = mesh or sharding.make_mesh(config.mesh)
  model = model or build.load(config.model)
  buckets.fit_pack(t, sharding.data_parallel_size(mesh))
  train_pairs, val_pairs = training_pairs(config)
  encode_fn = eval_run.make_encode_fn(model.module, mesh)
  clusters = lang_clusters(config, model, mesh, train_pairs, workdir, encode_fn)
  shard_dir = prepare(config, workdir, model.tokenizer, train_pairs, clusters)
  logging.info('shards: %s', shard_dir)
  if config.mode == 'prepare':
    return {}

  state, shardings, tx = init_state(config, model, mesh)
  checkpoint.bind_fields(workdir, run_fields(config, shard_dir))
  mngr = checkpoint.manager(workdir, t.keep_checkpoints, t.checkpoint_every, t.steps,
                            asynchronous=True)
  state = checkpoint.restore_latest(mngr, state)
  start = int(state.step)
  if start:
    logging.info('resuming from the checkpoint at step %d', start)
  train_fn = step_lib.jit_train_step(model.module, tx, shardings, mesh, t, config.seed,
                                     config.mesh.rules)
  ctx = evaluators_lib.Context(config, workdir, model, mesh, encode_fn, val_pairs, shardings,
                               t.steps)
  evaluators = evaluators_lib.from_config(config, ctx, validation_only=config.mode == 'train')
  overlaps = {}
  for evaluator in evaluators:
    if evaluator.is_benchmark:
      overlaps[evaluator.name] = overlap.sentence_overlap(train_pairs, evaluator.benchmark)
      total = overlaps[evaluator.name]['total']
      logging.info('training pairs share %d exact sentences with the %d of %s (%d queries, %d '
                   'candidates)', total['shared'], total['eval'], evaluator.benchmark.name,
                   total['shared_queries'], total['shared_candidates'])
  writer = make_writer(workdir, start)
  report_progress = periodic_actions.ReportProgress(num_train_steps=t.steps, writer=writer,
                                                    every_steps=t.log_every, every_secs=None)
  hooks = [report_progress]
  if t.profile_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(logdir=str(workdir / 'tensorboard'),
                                          num_profile_steps=t.profile_steps,
                                          first_profile=start + 5, every_secs=None))

  val_loss = {}  # step -> validation loss, to rank the checkpoint of that step

  def evaluate_at(evaluator):
    def callback(step, t, state):
      del t
      with report_progress.timed(evaluator.name):
        scalars = evaluator.run(step, state)
      writer.write_scalars(step, {f'{evaluator.name}/{k}': v for k, v in scalars.items()})
      if isinstance(evaluator, evaluators_lib.ValLossEvaluator) and step not in val_loss:
        val_loss[step] = scalars['loss']
    return periodic_actions.PeriodicCallback(every_steps=evaluator.every or None,
                                             on_steps=(0, t.steps), callback_fn=callback)

  window = []  # the training metrics since the last write

  def write_train_metrics(step, t, seconds):
    del t
    means = {f'train/{k}': float(np.mean([m[k] for m in window])) for k in window[0]}
    means['train/learning_rate'] = float(step_lib.learning_rate_schedule(config.train)(step - 1))
    means['train/pairs_per_s'] = len(window) * config.train.batch_size / max(seconds, 1e-9)
    writer.write_scalars(step, means)
    window.clear()

  eval_hooks = [evaluate_at(e) for e in evaluators]
  metrics_hook = periodic_actions.PeriodicCallback(every_steps=t.log_every, on_steps=(t.steps,),
                                                   callback_fn=write_train_metrics)
  data = input_pipeline.as_numpy(input_pipeline.make_dataset(
      shard_dir, start_step=start, process_index=jax.process_index(),
      process_count=jax.process_count()))
  started = tick = time.perf_counter()
  with metric_writers.ensure_flushes(writer):
    if start == 0:
      for hook in eval_hooks:
        hook(0, state=state)
    for batch in data:
      step = int(batch['step'])
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_fn(state, evaluators_lib.global_batch(batch, mesh))
      metrics = jax.device_get(metrics)
      if not np.isfinite(metrics['loss']):
        raise FloatingPointError(_nan_message(metrics['loss'], step, batch['kind'], mngr,
                                              workdir))
      window.append(metrics)
      done = step + 1
      for hook in hooks:
        hook(done)
      if metrics_hook(done, seconds=time.perf_counter() - tick):
        tick = time.perf_counter()
      for hook in eval_hooks:
        hook(done, state=state)
      checkpoint.save(mngr, state, val_loss.get(done))
    mngr.wait_until_finished()
  train_s = time.perf_counter() - started
  logging.info('trained steps %d..%d in %.1f s', start, t.steps, train_s)
  manifest = input_pipeline.read_manifest(shard_dir)
  return {'train_s': train_s, 'steps': (start, t.steps), 'evaluators': evaluators,
          'train_langs': train_pairs.langs, 'describe': manifest.get('describe', {}),
          'overlap': overlaps, 'state': state}


def run(config, workdir) -> dict:
  """Runs config.mode in workdir; returns what train_and_evaluate or evaluate_only returns."""
  started = time.perf_counter()
  workdir = io.path(workdir)
  if config.mode == 'eval':
    return evaluate_only(config, workdir)
  results = train_and_evaluate(config, workdir)
  if config.mode == 'all':
    results['wall_s'] = time.perf_counter() - started
    results['summary'] = write_summary(workdir, results)
  return results


def evaluate_only(config, workdir) -> dict:
  """Runs the benchmark evaluators on the latest checkpoint in workdir, else the pretrained model."""
  workdir = io.path(workdir)
  mesh = sharding.make_mesh(config.mesh)
  model = build.load(config.model)
  params = jax.device_put(model.params, sharding.replicated(mesh))
  state, tag = step_lib.TrainState(step=None, params=params, frozen={}, opt_state=None), \
      'zero_shot'
  if checkpoint.checkpoint_dir(workdir).exists():
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
      trained, _, _ = init_state(config, model, mesh)
      state = checkpoint.restore_latest(mngr, trained)
      tag = f'step{int(state.step)}'
  ctx = evaluators_lib.Context(config, workdir, model, mesh,
                               eval_run.make_encode_fn(model.module, mesh))
  out = {}
  for evaluator in evaluators_lib.from_config(config, ctx, benchmarks_only=True):
    evaluator.run(None, state)
    results = out[evaluator.name] = evaluator.results[None]
    logging.info('%s', '\n' + report.table(results['summary'], f'{results["benchmark"]} ({tag})'))
  return out


def write_summary(workdir, results: dict) -> dict:
  """Logs the first and last step's benchmark tables side by side; writes eval/summary.json.

  summary.json: {'train_s', 'wall_s', 'steps': [first, last], 'describe': the batch mix
  (sampler.describe of the shards: kinds, languages and language pairs per side),
  'group_metric': evaluate.GROUP_METRIC, 'evals': {name: {'benchmark', 'groups': {group: [langs]},
  'summary': {group: {'before': table, 'after': table}}, 'sentence_overlap':
  overlap.sentence_overlap(training pairs, benchmark)}}}, a table being
  {'mono'|'cross'|'multi': {metric: value}} under the group metric; groups are 'all languages',
  'seen in training' and 'unseen in training' (the empty ones left out).
  """
  first, last = results['steps']
  train_langs = set(results['train_langs'])
  out = {'train_s': results['train_s'], 'wall_s': results['wall_s'], 'steps': [first, last],
         'describe': results['describe'], 'group_metric': evaluate.GROUP_METRIC, 'evals': {}}
  for evaluator in results['evaluators']:
    if not evaluator.is_benchmark:
      continue
    before = evaluator.results.get(0)
    if before is None and evaluator.path(0).exists():  # resumed after its step-0 evaluation
      before = io.read_json(evaluator.path(0))
      before['per_query'] = report.read_per_query(evaluator.path(0, '_per_query.npz'))
    after = evaluator.results.get(last)
    if before is None or after is None:
      continue
    langs = before['langs']
    groups = {'all languages': langs,
              'seen in training': [l for l in langs if l in train_langs],
              'unseen in training': [l for l in langs if l not in train_langs]}
    groups = {k: v for k, v in groups.items() if v}
    summary = {}
    for group, group_langs in groups.items():
      summary[group] = {when: evaluate.group_results(r['per_query'], group_langs)['summary']
                        for when, r in (('before', before), ('after', after))}
      logging.info('%s', '\n' + report.side_by_side(
          report.table(summary[group]['before'],
                       f'{before["benchmark"]} before ({group}: {",".join(group_langs)})'),
          report.table(summary[group]['after'], 'after training')))
    out['evals'][evaluator.name] = {'benchmark': before['benchmark'], 'groups': groups,
                                    'summary': summary,
                                    'sentence_overlap': results['overlap'].get(evaluator.name)}
  logging.info('group metric: %s', evaluate.GROUP_METRIC)
  mix = results['describe']
  if mix:
    logging.info('batch mix: %s batches (%s); pairs per query language %s; %d language pairs, '
                 'most drawn %s', mix['num_batches'], mix['kinds'], mix['query_langs'],
                 len(mix['lang_pairs']),
                 dict(sorted(mix['lang_pairs'].items(), key=lambda kv: -kv[1])[:5]))
  logging.info('wall time: %.0f s (training %.0f s)', results['wall_s'], results['train_s'])
  if jax.process_index() == 0:
    io.write_json(io.path(workdir) / 'eval' / 'summary.json', out)
  return out

