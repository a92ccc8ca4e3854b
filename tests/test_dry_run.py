"""The dry run: a train step compiled on abstract shapes; FSDP over 8 devices divides the per-device
params and optimizer memory by 8; the CLI mode sets its own simulated device count; its batch is the
real step's (alignment terms and the language discriminator on)."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import models
from hbt import config_lib
from hbt import sharding
from hbt.eval import evaluators
from hbt.model import encoder
from hbt.train import adversarial
from hbt.train import dry_run
from tests import test_shards as ts
from tests.conftest import REPO
from tests.test_shards import pairs, sampler, tokenizer  # pylint: disable=unused-import (fixtures)

# Every dimension the rules split is divisible by 8.
ARCH = dict(vocab_size=512, hidden=64, layers=1, heads=4, mlp=128, max_positions=64,
            type_vocab_size=1, position_offset=2, layer_norm_eps=1e-5, pad_id=1)


def tiny_config(mesh_shape):
  config = models.get_config('xlmr_base')
  config.model.arch.update(ARCH)
  config.train.update(batch_size=16, max_query_length=8, max_passage_length=16,
                      freeze_embeddings=False, pack_texts=1)  # the FLOP formula's unpacked shapes
  config.mesh.shape = mesh_shape
  config_lib.validate(config)
  return config


def param_count(a: encoder.Arch) -> int:
  """BERT / XLM-R parameter count, written out by hand."""
  h, m = a.hidden, a.mlp
  embeddings = (a.vocab_size + a.max_positions + a.type_vocab_size) * h + 2 * h
  layer = 4 * (h * h + h) + (h * m + m) + (m * h + h) + 2 * 2 * h
  return embeddings + a.layers * layer


def train_flops(a: encoder.Arch, batch: int, query_len: int, passage_len: int) -> float:
  """Matmul FLOPs of a train step by hand: forward x 3 (the backward does twice the forward)."""
  tokens = batch * (query_len + passage_len)
  dense = 2 * tokens * (4 * a.hidden ** 2 + 2 * a.hidden * a.mlp)
  attention = 2 * 2 * batch * (query_len ** 2 + passage_len ** 2) * a.hidden
  return 3 * a.layers * (dense + attention)


@pytest.fixture(scope='module')
def data_and_fsdp():
  return [dry_run.analyse(tiny_config(shape), encoder.Arch(**ARCH))
          for shape in ((-1, 1, 1), (1, -1, 1))]


def test_fsdp_divides_param_and_optimizer_memory_by_devices(data_and_fsdp):
  data, fsdp = data_and_fsdp
  assert data['devices'] == fsdp['devices'] == jax.device_count() == 8
  assert data['params'] == fsdp['params'] == param_count(encoder.Arch(**ARCH))
  assert data['params_bytes'] == 4 * data['params']  # float32, replicated
  assert 7.5 < data['params_bytes'] / fsdp['params_bytes'] <= 8
  assert 7.5 < data['opt_state_bytes'] / fsdp['opt_state_bytes'] <= 8  # Adam's mu and nu
  # XLA's own view of the step's inputs (state + batch) shrinks alike.
  assert data['argument_bytes'] / fsdp['argument_bytes'] > 6
  assert data['temp_bytes'] > 0
  # XLA's FLOPs: the matmuls counted by hand, plus elementwise work (softmax, GELU, LayerNorm).
  assert 1.0 <= data['flops'] / train_flops(encoder.Arch(**ARCH), 16, 8, 16) < 1.25


def test_model_configs_validate_and_carry_their_architecture():
  for name in models.MODELS:
    config = models.get_config(name)
    config.mode = 'dry_run'
    config_lib.validate(config)
  xl, xxl = models.get_config('xlmr_xl').model.arch, models.get_config('xlmr_xxl').model.arch
  assert 3.4e9 < param_count(encoder.Arch(**xl)) < 3.6e9  # "XLM-R XL (3.5B)"
  assert 10.6e9 < param_count(encoder.Arch(**xxl)) < 10.8e9  # "XLM-R XXL (10.7B)"
  config = models.get_config('xlmr_base')
  config.mode, config.model.arch = 'dry_run', {}
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.arch'):
    config_lib.validate(config)


def test_cli_dry_run_sets_its_device_count(tmp_path):
  overrides = [f'--config.model.arch.{k}={v}' for k, v in ARCH.items()]
  env = {**os.environ, 'XLA_FLAGS': '', 'JAX_PLATFORMS': ''}
  out = subprocess.run(
      [sys.executable, '-m', 'hbt.main', '--config=configs/models.py:xlmr_base',
       f'--workdir={tmp_path}', '--config.mode=dry_run', '--config.dry_run.devices=4',
       '--config.mesh.shape=(1,-1,1)', '--config.train.batch_size=8',
       '--config.train.max_passage_length=16', '--config.train.max_query_length=8', *overrides],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "dry run: 4 devices, mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in out.stdout
  assert f"params           {param_count(encoder.Arch(**ARCH)) / 1e6:,.1f} M" in out.stdout
  # The FLOPs and per-device memory lines BUILD.md promises, with their figures.
  lines = {line.split(' / ')[0]: line.split(' / ', 1)[1].split(None, 1)[1]
           for line in out.stdout.splitlines()
           if line.startswith(('flops /', 'params /', 'opt /', 'temp /', 'peak /'))}
  total, per_device = map(float, re.findall(r'[\d.]+e[+-]\d+', lines['flops']))
  assert per_device == pytest.approx(total / 4, rel=1e-3)
  # At least the matmuls; at this tiny size the optimizer and norms add up to 2/3 more.
  assert 1.0 <= total / train_flops(encoder.Arch(**ARCH), 8, 8, 16) < 2
  gib = {k: float(v.split()[0]) for k, v in lines.items() if k != 'flops'}
  assert set(gib) == {'params', 'opt', 'temp', 'peak'} and gib['peak'] > 0  # GiB, 3 decimals
  assert gib['peak'] >= gib['params'] + gib['opt']


def test_batch_that_the_batch_shards_do_not_divide_fails_naming_the_field():
  config = tiny_config((-1, 1, 1))
  config.train.batch_size = 12
  with pytest.raises(ValueError, match=r'config\.train\.batch_size=12'):
    dry_run.analyse(config, encoder.Arch(**ARCH))


def test_remat_cuts_the_activation_memory():
  arch = encoder.Arch(**{**ARCH, 'layers': 4, 'max_positions': 128})  # passages of 64 tokens
  temp = {}
  for remat in (False, True):
    config = tiny_config((1, 1, 1))
    config.model.remat = remat
    config.train.max_passage_length = 64
    temp[remat] = dry_run.analyse(config, arch, jax.devices()[:1])['temp_bytes']
  assert temp[True] < 0.5 * temp[False]


def test_dry_run_takes_the_configured_attention(monkeypatch):
  """config.model.attention='fused' reaches the dry run's step (dropout off: the fused path)."""
  calls = []
  real = encoder.fused_attention
  monkeypatch.setattr(encoder, 'fused_attention', lambda *a: calls.append(1) or real(*a))
  for attention in ('matmul', 'fused'):
    config = tiny_config((1, 1, 1))
    config.model.attention, config.model.dropout_rate = attention, 0.0
    dry_run.analyse(config, encoder.Arch(**ARCH), jax.devices()[:1])
    assert bool(calls) == (attention == 'fused')


@pytest.mark.parametrize('pack', [1, 2])
def test_abstract_batch_is_the_real_step_batch(tmp_path, sampler, pairs, tokenizer, pack):
  """Shards with every side (hard negatives, parallel sides) read back and made global as the
  train loop does: the dry run's batch has the same arrays, dtypes, shardings and rows, and
  each other dimension at most the dry run's (bucketed lengths, packed windows per row)."""
  with_negs = ts._with_negatives(pairs, 2)
  folder = ts._prepare(tmp_path, type(sampler)(with_negs, ts.BATCH, 'hybrid', seed=5), with_negs,
                       tokenizer, num_steps=2, hard_negatives=2, parallel=True, pack_texts=pack)
  mesh = sharding.make_mesh(tiny_config((-1, 1, 1)).mesh, jax.devices()[:4])  # 4 packed rows
  real = evaluators.global_batch(ts._read(folder)[0], mesh)
  config = tiny_config((-1, 1, 1))
  config.train.update(batch_size=ts.BATCH, max_query_length=ts.MAX_Q,
                      max_passage_length=ts.MAX_P, hard_negatives=2, pack_texts=pack,
                      parallel_passage_weight=0.5)
  abstract = dry_run._abstract_batch(config, mesh)
  assert sorted(abstract) == sorted(real)
  for key, x in real.items():
    a = abstract[key]
    assert (a.dtype, a.sharding, a.shape[:1], x.ndim) == (x.dtype, x.sharding, x.shape[:1],
                                                           a.ndim), key
    assert all(n <= m for n, m in zip(x.shape, a.shape)), key


@pytest.fixture(scope='module')
def plain_and_with_terms():
  """The step's figures without and with both alignment terms and the discriminator."""
  out = []
  for on in (False, True):
    config = tiny_config((-1, 1, 1))
    if on:
      config.train.update(parallel_query_weight=0.5, parallel_passage_weight=0.5)
      config.train.adversarial.update(weight=0.1, hidden=16)
    out.append(dry_run.analyse(config, encoder.Arch(**ARCH)))
  return out


def test_dry_run_compiles_the_step_with_alignment_terms_and_discriminator(plain_and_with_terms):
  plain, terms = plain_and_with_terms
  h, classes = ARCH['hidden'], len(adversarial.LANGS)
  discriminator = h * 16 + 16 + 16 * classes + classes
  assert terms['trainable_params'] - plain['trainable_params'] == discriminator
  assert terms['params'] - plain['params'] == discriminator
  # The parallel sides (each id's query and positive in the other language) are encoded too:
  # twice the texts of the same shapes, so about twice the matmul FLOPs.
  hand = train_flops(encoder.Arch(**ARCH), 16, 8, 16)
  assert 1.0 <= (terms['flops'] - plain['flops']) / hand < 1.25
  assert terms['opt_state_bytes'] > plain['opt_state_bytes']


def test_the_capacity_sweep_runs_every_importable_model_at_the_dry_run_setting():
  from hbt.experiments import sweep as sweep_lib  # pylint: disable=import-outside-toplevel
  spec = sweep_lib.load_sweep('configs/sweeps/capacity.py')  # validates every run's config
  assert set(spec['directions']) == set(models.MODELS) - {'xlmr_xl', 'xlmr_xxl'}  # pre-LN
  trained = [r for r in sweep_lib.runs(spec) if r['arm'] != sweep_lib.ZERO_SHOT]
  assert len(trained) == 7 * 3 * 3
  for run in trained:
    config = sweep_lib.run_config(run)
    assert config.model.arch.to_dict() == models.get_config(run['direction']).model.arch.to_dict()
    t = config.train
    assert (t.steps, t.batch_size, t.max_query_length, t.max_passage_length, t.pack_texts,
            t.freeze_embeddings, config.model.remat) == (1000, 128, 48, 256, 1, False, False)
