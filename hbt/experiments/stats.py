"""Paired significance tests between two systems scored on the same queries.

`paired_permutation_test` is the sign-flip randomisation test of the mean difference (Fisher's
paired permutation test; scipy.stats.permutation_test with permutation_type='samples' is the
same test): under the null hypothesis the two systems are exchangeable on every query, so each
difference keeps or flips its sign with probability 1/2. With at most `n_resamples` sign
patterns it enumerates them all (exact p-value); otherwise it draws `n_resamples` of them and
counts the observed statistic as one of them, so a p-value is never 0.

`paired_bootstrap_ci` is the percentile bootstrap interval of the mean difference.
"""

import numpy as np


def _differences(a, b) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or not a.size:
    raise ValueError(f'paired scores must be two non-empty 1-D arrays of one length, got shapes '
                     f'{a.shape} and {b.shape}')
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    raise ValueError('paired scores must be finite (drop the queries one system lacks first)')
  return a - b


def _sign_patterns(n: int, n_resamples: int, rng, chunk: int):
  """Yields [k, n] arrays of +-1: all 2**n patterns if that is at most n_resamples, else random."""
  if 2 ** n <= n_resamples:
    codes = np.arange(2 ** n)
    for start in range(0, codes.size, chunk):
      bits = (codes[start:start + chunk, None] >> np.arange(n)) & 1
      yield 1.0 - 2.0 * bits
    return
  for start in range(0, n_resamples, chunk):
    k = min(chunk, n_resamples - start)
    yield 1.0 - 2.0 * rng.integers(0, 2, size=(k, n))


def paired_permutation_test(a, b, *, n_resamples: int = 10_000, seed: int = 0,
                            chunk: int = 256) -> dict:
  """Two-sided sign-flip test of mean(a - b) = 0 over paired per-query scores.

  Args:
    a, b: float [n] scores of two systems on the same n queries (same order).
    n_resamples: sign patterns drawn (all 2**n are enumerated when 2**n <= n_resamples).
    seed: seeds the random sign patterns.
    chunk: sign patterns per matrix product (memory: chunk * n floats).

  Returns:
    {'mean_diff': mean(a - b), 'p_value', 'n': n, 'exact': whether every pattern was used,
     'n_resamples': patterns used}.
  """
  d = _differences(a, b)
  n = d.size
  observed = d.mean()
  gamma = abs(observed) * np.finfo(np.float64).eps * 100  # ties up to rounding count as ties
  exact = 2 ** n <= n_resamples
  rng = np.random.default_rng(seed)
  less = greater = total = 0
  for signs in _sign_patterns(n, n_resamples, rng, chunk):
    null = signs @ d / n
    less += int(np.count_nonzero(null <= observed + gamma))
    greater += int(np.count_nonzero(null >= observed - gamma))
    total += null.size
  adjust = 0 if exact else 1
  p = 2 * min(less + adjust, greater + adjust) / (total + adjust)
  return {'mean_diff': float(observed), 'p_value': float(min(p, 1.0)), 'n': int(n),
          'exact': bool(exact), 'n_resamples': int(total)}


def paired_bootstrap_ci(a, b, *, level: float = 0.95, n_resamples: int = 2_000, seed: int = 0,
                        chunk: int = 200) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(a - b), resampling queries with replacement."""
  d = _differences(a, b)
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, n_resamples, chunk):
    k = min(chunk, n_resamples - start)
    means.append(d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1))
  low, high = np.quantile(np.concatenate(means), [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)
