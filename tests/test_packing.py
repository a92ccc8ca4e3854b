"""Packed rows (several texts per row, in windows) give the embeddings and the loss of one text per
row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from hbt.batches import buckets
from hbt.batches import shards
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib
from hbt.train import step as step_lib
from tests import test_train_step as ts

ARCH = ts.ARCH


def random_texts(count, low, high, seed):
  rng = np.random.default_rng(seed)
  return [rng.integers(4, ARCH.vocab_size, size=n).astype(np.int32)
          for n in rng.integers(low, high + 1, size=count)]


def padded(seqs):
  return tokenizer_lib.pad_batch(seqs, max(map(len, seqs)), ARCH.pad_id)


def windows(texts, rows, window):
  """`shards.pack`'s rows flattened to their windows, as the encoder takes them: [rows * k, W]."""
  tokens, segments = shards.pack(texts, rows, window, ARCH.pad_id)
  return tokens.reshape(-1, window), segments.reshape(-1, window)


def init(module):
  dummy = jnp.zeros((1, 4), jnp.int32)
  return ts.nn_unbox(module.init(jax.random.key(0), dummy, dummy))


def test_segment_positions_restart_at_each_text():
  seg = jnp.array([[1, 1, 1, 3, 3, 2, 0, 0], [4, 4, 4, 4, 4, 4, 4, 4]])
  np.testing.assert_array_equal(encoder.segment_positions(seg),
                                [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize('pooling', encoder.POOLINGS)
def test_packed_embeddings_equal_one_text_per_row(pooling):
  module = encoder.Encoder(ARCH, pooling=pooling)
  params = init(module)
  texts = random_texts(12, 2, 20, seed=1)
  ids, mask = padded(texts)
  want = np.asarray(module.apply({'params': params}, ids, mask))
  tokens, segments = windows(texts, 3, 32)
  assert max(len(set(row[row > 0].tolist())) for row in segments) > 2  # several per window
  got = np.asarray(module.apply({'params': params}, tokens, segments, num_texts=len(texts)))
  cos = np.sum(got * want, -1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
  assert cos.min() >= 0.9999
  np.testing.assert_allclose(got, want, atol=2e-5)


def run_packed(batch, packed, pack):
  """One step (no dropout) on the plain batch and on its packed form: (metrics, params) each."""
  config = ts.train_config()
  out = []
  for b, p in ((batch, 1), (packed, pack)):
    config.pack_texts = p
    params, metrics = ts.run_steps(jax.devices()[:1], config, [b], dropout=0.0)
    out.append((metrics[0], params))
  return out


def test_packed_step_equals_unpacked_step():
  pairs, pack, hard = 8, 4, 2
  sides = {'query': random_texts(pairs, 3, 8, seed=2),
           'positive': random_texts(pairs, 4, 12, seed=3)}
  if hard:
    sides['negative'] = random_texts(pairs * hard, 4, 12, seed=4)
  batch, packed = {}, {}
  for name, texts in sides.items():
    ids, mask = padded(texts)
    if name == 'negative':
      ids, mask = ids.reshape(pairs, hard, -1), mask.reshape(pairs, hard, -1)
    batch[f'{name}_tokens'], batch[f'{name}_mask'] = ids, mask
    packed[f'{name}_tokens'], packed[f'{name}_mask'] = shards.pack(texts, len(texts) // pack,
                                                                   16, ARCH.pad_id)
    assert packed[f'{name}_tokens'].shape[1] > 1  # several windows per row
  (m1, p1), (m4, p4) = run_packed(batch, packed, pack)
  np.testing.assert_allclose(m4['loss'], m1['loss'], rtol=1e-5)
  np.testing.assert_allclose(m4['l2_grads'], m1['l2_grads'], rtol=1e-4)
  ts.assert_trees_close(p1, p4, 1e-5)


def test_packed_eval_step_equals_unpacked():
  module = encoder.Encoder(ARCH)
  params = init(module)
  mesh = Mesh(np.asarray(jax.devices()[:1]), ('data',))
  config = ts.train_config()
  tx = step_lib.make_optimizer(config)
  shardings = step_lib.state_shardings(module, tx, mesh, ts.RULES, True)
  state = step_lib.create_state(params, tx, shardings, True)
  q, p = random_texts(8, 3, 9, seed=5), random_texts(8, 3, 15, seed=6)
  plain = dict(zip(('query_tokens', 'query_mask'), padded(q)))
  plain.update(zip(('positive_tokens', 'positive_mask'), padded(p)))
  packed = dict(zip(('query_tokens', 'query_mask'), shards.pack(q, 4, 12, ARCH.pad_id)))
  packed.update(zip(('positive_tokens', 'positive_mask'), shards.pack(p, 4, 16, ARCH.pad_id)))
  want = step_lib.eval_step(state, plain, module=module, temperature=0.05, symmetric=True)
  got = step_lib.eval_step(state, packed, module=module, temperature=0.05, symmetric=True,
                           pack_texts=2)
  np.testing.assert_allclose(float(got['loss']), float(want['loss']), rtol=1e-5)
  assert float(got['accuracy']) == float(want['accuracy'])


def test_second_epoch_compiles_nothing():
  """After one epoch over every batch shape, the train step never compiles again."""
  config = ts.train_config(pack_texts=2)
  mesh = Mesh(np.asarray(jax.devices()[:1]), ('data',))
  module = encoder.Encoder(ARCH, dropout_rate=0.1)
  tx = step_lib.make_optimizer(config)
  shardings = step_lib.state_shardings(module, tx, mesh, ts.RULES, True)
  state = step_lib.create_state(init(module), tx, shardings, True)
  fn = step_lib.jit_train_step(module, tx, shardings, mesh, config, seed=0)
  epoch = []
  for seed, high in ((7, 8), (8, 30), (9, 8)):  # two packed shapes, one repeated
    q, p = random_texts(8, 3, high, seed), random_texts(8, 3, high, seed + 10)
    batch = dict(zip(('query_tokens', 'query_mask'), shards.pack(q, 4, 32, ARCH.pad_id)))
    batch.update(zip(('positive_tokens', 'positive_mask'), shards.pack(p, 4, 32, ARCH.pad_id)))
    epoch.append(batch)
  assert len({b['positive_tokens'].shape for b in epoch}) == 2
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event) if event == (
      '/jax/core/compile/backend_compile_duration') else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for b in epoch:
      state, _ = fn(state, b)
    first = len(compiles)
    for b in epoch:
      state, metrics = fn(state, b)
    jax.block_until_ready(metrics)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert first >= 2  # the listener sees compilations: one per shape at least
  assert len(compiles) == first, compiles[first:]


@pytest.mark.parametrize('batch,pack,devices,expected', [
    (32, 4, 1, 4), (32, 4, 8, 4), (16, 4, 8, 2), (8, 4, 8, 1), (12, 4, 2, 3), (8, 1, 8, 1)])
def test_fit_pack_lowers_packing_to_split_rows_over_devices(batch, pack, devices, expected):
  config = ts.train_config(batch_size=batch, pack_texts=pack)
  assert buckets.fit_pack(config, devices) == expected == config.pack_texts
  assert (batch // expected) % devices == 0


@pytest.mark.parametrize('packed', [False, True])
def test_fused_attention_equals_matmul_attention(packed, monkeypatch):
  """attention='fused' (jax.nn.dot_product_attention; cuDNN on a GPU) gives the 'matmul' path's
  embeddings, with padding and with block-diagonal packed rows."""
  calls = []
  real = encoder.fused_attention
  monkeypatch.setattr(encoder, 'fused_attention', lambda *a: calls.append(1) or real(*a))
  texts = random_texts(12, 2, 20, seed=3)
  args, kwargs = (windows(texts, 3, 32), {'num_texts': len(texts)}) if packed else (
      padded(texts), {})
  plain, fused = encoder.Encoder(ARCH), encoder.Encoder(ARCH, attention='fused')
  params = init(plain)
  want = np.asarray(plain.apply({'params': params}, *args, **kwargs))
  got = np.asarray(fused.apply({'params': params}, *args, **kwargs))
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert calls  # the fused call really ran (once per traced layer)


def test_fused_attention_keeps_attention_dropout_in_training():
  """With dropout on in training, 'fused' falls back to the matmul path: the same outputs."""
  texts = random_texts(8, 2, 12, seed=4)
  ids, mask = padded(texts)
  plain = encoder.Encoder(ARCH, dropout_rate=0.1)
  fused = encoder.Encoder(ARCH, dropout_rate=0.1, attention='fused')
  params = init(plain)
  rngs = {'dropout': jax.random.key(7)}
  want = plain.apply({'params': params}, ids, mask, deterministic=False, rngs=rngs)
  got = fused.apply({'params': params}, ids, mask, deterministic=False, rngs=rngs)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  evaluated = fused.apply({'params': params}, ids, mask, deterministic=True)
  assert np.abs(np.asarray(evaluated) - np.asarray(want)).max() > 1e-4  # dropout really was on


def test_embed_texts_hands_the_encoder_windows_as_rows():
  """Attention runs per window: the encoder sees [rows * k, W], not rows of k * W tokens."""
  module = encoder.Encoder(ARCH)
  params = init(module)
  texts = random_texts(8, 3, 12, seed=11)
  tokens, segments = shards.pack(texts, 2, 16, ARCH.pad_id)
  assert tokens.shape[1] > 1
  seen = []
  real = module.apply
  spy = lambda variables, ids, *args, **kwargs: seen.append(ids.shape) or real(
      variables, ids, *args, **kwargs)
  object.__setattr__(module, 'apply', spy)
  got = step_lib.embed_texts(module, params, tokens, segments, num_pairs=8, pack_texts=4)
  assert seen == [(tokens.shape[0] * tokens.shape[1], 16)]
  want = np.asarray(real({'params': params}, *padded(texts)))
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
