"""Paired tests of hbt.experiments.stats against scipy.stats references."""

import numpy as np
import pytest
from scipy import stats as sp_stats

from hbt.experiments import stats


def _scipy_paired(a, b, n_resamples, seed=0):
  return sp_stats.permutation_test(
      (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type='samples',
      vectorized=True, n_resamples=n_resamples, alternative='two-sided', rng=seed)


@pytest.mark.parametrize('shift', [0.0, 0.15, 0.6])
def test_exact_permutation_matches_scipy(shift):
  rng = np.random.default_rng(1)
  a = rng.uniform(size=12)
  b = np.clip(a - shift + rng.normal(0, 0.3, size=12), 0, 1)
  ours = stats.paired_permutation_test(a, b, n_resamples=10_000)
  ref = _scipy_paired(a, b, 10_000)
  assert ours['exact'] and ours['n_resamples'] == 2 ** 12
  assert ours['p_value'] == pytest.approx(ref.pvalue, abs=1e-12)
  assert ours['mean_diff'] == pytest.approx(np.mean(a - b))


def test_monte_carlo_permutation_close_to_scipy():
  rng = np.random.default_rng(2)
  a = rng.uniform(size=400)
  b = a - 0.005 + rng.normal(0, 0.1, size=400)  # a weak effect: p well inside (0, 1)
  ours = stats.paired_permutation_test(a, b, n_resamples=20_000, seed=3)
  ref = _scipy_paired(a, b, 20_000, seed=4)
  assert not ours['exact']
  assert 0.01 < ref.pvalue < 0.9
  assert ours['p_value'] == pytest.approx(ref.pvalue, abs=0.015)


def test_large_effect_and_null_effect():
  rng = np.random.default_rng(5)
  base = rng.uniform(size=2000)
  strong = stats.paired_permutation_test(base + 0.05, base + rng.normal(0, 0.05, 2000),
                                         n_resamples=2000)
  assert strong['p_value'] == pytest.approx(2 / 2001)  # nothing beats it: the two-sided floor
  null = stats.paired_permutation_test(base, base[::-1].copy(), n_resamples=2000)
  assert null['p_value'] > 0.2
  identical = stats.paired_permutation_test(base, base, n_resamples=100)
  assert identical['p_value'] == 1.0 and identical['mean_diff'] == 0.0


def test_bootstrap_interval_matches_normal_theory_and_scipy():
  rng = np.random.default_rng(6)
  a = rng.uniform(size=3000)
  b = a - 0.02 + rng.normal(0, 0.2, 3000)
  d = a - b
  low, high = stats.paired_bootstrap_ci(a, b, n_resamples=4000)
  se = d.std(ddof=1) / np.sqrt(d.size)
  assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.2 * se)
  assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.2 * se)
  ref = sp_stats.bootstrap((d,), np.mean, n_resamples=4000, method='percentile', rng=0)
  assert low == pytest.approx(ref.confidence_interval.low, abs=0.2 * se)
  assert high == pytest.approx(ref.confidence_interval.high, abs=0.2 * se)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match='one length'):
    stats.paired_permutation_test([0.1, 0.2], [0.1])
  with pytest.raises(ValueError, match='finite'):
    stats.paired_permutation_test([0.1, np.nan], [0.1, 0.2])
