"""Dropout masks (encoder.keep_mask): rate, independence, and dependence only on (key, row)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hbt.model import encoder


def mask(key, rows, shape, keep):
  return np.asarray(jax.jit(encoder.keep_mask, static_argnums=(2, 3))(
      jax.random.key(key), jnp.asarray(rows), shape, keep))


@pytest.mark.parametrize('keep', [0.9, 0.5, 0.1])
def test_keep_fraction_is_binomial(keep):
  m = mask(0, np.arange(64), (12, 40, 40), keep)
  n = m.size
  assert m.shape == (64, 12, 40, 40)
  # 5 standard deviations of a binomial fraction.
  assert abs(m.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / n)


def test_bits_are_uniform_over_positions_and_rows():
  """Chi-square of the kept counts over 16 position classes and 16 row classes."""
  keep = 0.5
  m = mask(3, np.arange(256), (4096,), keep)
  for counts in (m.reshape(256, 16, 256).sum(axis=(0, 2)),  # position blocks
                 m.reshape(256, 16, 256)[:, :, :].sum(axis=(1, 2)).reshape(16, 16).sum(1)):
    expected = m.size / 16 * keep
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # 15 degrees of freedom, p = 0.001


def test_neighbours_rows_and_keys_are_uncorrelated():
  keep = 0.5
  m = mask(1, np.arange(8), (50_000,), keep).astype(np.float64)
  other_key = mask(2, np.arange(8), (50_000,), keep).astype(np.float64)
  bound = 5 / np.sqrt(50_000)
  for a, b in ((m[:, :-1], m[:, 1:]),  # adjacent positions
               (m[:-1], m[1:]),  # adjacent rows
               (m, other_key)):  # another key (another site or step)
    r = np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1]
    assert abs(r) < bound, r


def test_a_rows_mask_depends_only_on_key_and_row_id():
  """The GradCache / packing / sharding invariance: the same row id gets the same mask in any
  batch, at any position of it."""
  a = mask(7, np.array([3, 5, 11]), (6, 9), 0.7)
  b = mask(7, np.array([11, 3]), (6, 9), 0.7)
  np.testing.assert_array_equal(a[0], b[1])
  np.testing.assert_array_equal(a[2], b[0])
  assert (a[0] != a[1]).any()


def test_dropout_module_zeroes_and_rescales():
  x = jnp.ones((4, 100, 64))
  module = encoder.Dropout(0.25)
  y = module.apply({}, x, jnp.arange(4), False, rngs={'dropout': jax.random.key(0)})
  y = np.asarray(y)
  assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
  assert abs((y == 0).mean() - 0.25) < 0.01
  np.testing.assert_array_equal(
      np.asarray(module.apply({}, x, jnp.arange(4), True, rngs={'dropout': jax.random.key(0)})),
      np.asarray(x))
