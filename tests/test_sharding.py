"""Sharding rules on 8 simulated CPU devices: data, fsdp and tensor meshes give the 1-device loss
and gradients, the params and optimizer state are really split, and remat changes no gradient."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from hbt import sharding
from hbt.model import encoder
from hbt.train import step as step_lib
from tests.test_train_step import assert_trees_close, make_batch, train_config

# Every dimension a mesh axis splits is divisible by 8.
ARCH = encoder.Arch(vocab_size=64, hidden=32, layers=2, heads=4, mlp=64, max_positions=40,
                    type_vocab_size=1, position_offset=2, layer_norm_eps=1e-12, pad_id=1)
RULES = default.get_config().mesh.rules
MESHES = {'data8': (8, 1, 1), 'fsdp8': (1, 8, 1), 'data2_fsdp4': (2, 4, 1),
          'fsdp4_tensor2': (1, 4, 2), 'data2_fsdp2_tensor2': (2, 2, 2)}


def mesh_of(shape):
  config = ml_collections.ConfigDict({'axes': ('data', 'fsdp', 'tensor'), 'shape': shape})
  return sharding.make_mesh(config, jax.devices()[:int(np.prod(shape))])


@functools.lru_cache
def init_params(remat=False):
  module = encoder.Encoder(ARCH, dropout_rate=0.1, remat=remat)
  dummy = jnp.zeros((1, 4), jnp.int32)
  return jax.tree.map(np.asarray, nn.unbox(module.init(jax.random.key(0), dummy, dummy))['params'])


def loss_and_grads(shape, remat=False, hard=1):
  """The real train step with SGD(lr=1): the params move by exactly minus the gradients."""
  mesh = mesh_of(shape)
  module = encoder.Encoder(ARCH, dropout_rate=0.1, remat=remat)
  config = train_config(freeze_embeddings=False)
  tx = optax.sgd(1.0)
  params = init_params()
  shardings = step_lib.state_shardings(module, tx, mesh, RULES, False)
  state = step_lib.create_state(params, tx, shardings, False)
  fn = step_lib.jit_train_step(module, tx, shardings, mesh, config, seed=0, rules=RULES)
  batch = jax.device_put(make_batch(hard=hard, seed=1), sharding.batch_sharding(mesh))
  state, metrics = fn(state, batch)
  grads = jax.tree.map(lambda p, q: p - np.asarray(q), params, state.params)
  return float(metrics['loss']), grads


@functools.lru_cache
def one_device():
  return loss_and_grads((1, 1, 1))


@pytest.mark.parametrize('name', list(MESHES))
def test_mesh_gives_one_device_loss_and_gradients(name):
  loss, grads = loss_and_grads(MESHES[name])
  ref_loss, ref_grads = one_device()
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert np.abs(ref_grads['layers']['mlp_in']['kernel']).max() > 1e-4  # gradients are not ~0
  assert_trees_close(grads, ref_grads, 1e-5)


@pytest.mark.parametrize('name', list(MESHES))
def test_params_and_optimizer_state_are_split(name):
  data, fsdp, tensor = MESHES[name]
  mesh = mesh_of(MESHES[name])
  module = encoder.Encoder(ARCH)
  tx = step_lib.make_optimizer(train_config())
  shardings = step_lib.state_shardings(module, tx, mesh, RULES, True)
  state = step_lib.create_state(init_params(), tx, shardings, True)
  layers = state.params['layers']
  # [layers, in, out] kernels: 'embed' over fsdp, 'heads' / 'mlp' over tensor.
  shard_shapes = {
      'query': (2, 32 // fsdp, 32 // tensor), 'out': (2, 32 // tensor, 32 // fsdp),
      'mlp_in': (2, 32 // fsdp, 64 // tensor), 'mlp_out': (2, 64 // tensor, 32 // fsdp)}
  for name, shape in shard_shapes.items():
    assert layers[name]['kernel'].addressable_shards[0].data.shape == shape, name
  assert layers['attn_ln']['scale'].addressable_shards[0].data.shape == (2, 32 // fsdp)
  assert state.frozen['word_embeddings'].addressable_shards[0].data.shape == (
      64 // tensor, 32 // fsdp)
  assert state.params['position_embeddings'].addressable_shards[0].data.shape == (40, 32 // fsdp)
  # Adam's moments are split like the params they belong to.
  adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, 'mu'))
          if hasattr(s, 'mu')][0]
  for moment in (adam.mu, adam.nu):
    jax.tree.map(lambda m, p: (m.sharding.is_equivalent_to(p.sharding, m.ndim) and
                               m.addressable_shards[0].data.shape ==
                               p.addressable_shards[0].data.shape) or pytest.fail(str(m.sharding)),
                 moment, state.params)
  batch = jax.device_put(make_batch(), sharding.batch_sharding(mesh))
  assert batch['query_tokens'].addressable_shards[0].data.shape == (16 // (data * fsdp), 8)


def test_hidden_states_are_constrained():
  mesh = mesh_of(MESHES['fsdp4_tensor2'])
  module = encoder.Encoder(ARCH)
  params = init_params()
  ids = jnp.ones((8, 6), jnp.int32)
  text = jax.jit(sharding.with_activation_rules(module.apply, mesh, RULES)).lower(
      {'params': params}, ids, ids).as_text()
  assert '[{"data", "fsdp"}, {}, {"tensor"}]' in text  # the MLP's hidden units over 'tensor'
  assert '[{"data", "fsdp"}, {}, {}]' in text  # the residual stream split by batch only
  plain = jax.jit(module.apply).lower({'params': params}, ids, ids).as_text()
  assert 'sharding_constraint' not in plain  # no rules: no constraints (1-device encoding)


def test_dimension_a_mesh_axis_does_not_divide_stays_whole():
  mesh = mesh_of((1, 2, 4))
  boxed = {'w': nn.Partitioned(jax.ShapeDtypeStruct((250002, 32), jnp.float32),
                               ('vocab', 'embed'))}
  spec = sharding.param_shardings(mesh, boxed, RULES)['w'].spec
  assert tuple(spec) == (None, 'fsdp')  # 250002 % 4 != 0: the vocabulary is not split


def test_remat_gives_equal_gradients():
  ref_loss, ref_grads = one_device()
  loss, grads = loss_and_grads((1, 1, 1), remat=True)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  assert_trees_close(grads, ref_grads, 1e-6)
  module = encoder.Encoder(ARCH, remat=True)
  ids = jnp.ones((2, 6), jnp.int32)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: module.apply({'params': p}, ids, ids).sum()))(
      init_params()))
  assert 'checkpoint' in jaxpr or 'remat' in jaxpr  # the layers really are rematerialised
