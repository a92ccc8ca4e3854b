"""Test set-up: 8 simulated CPU devices for sharding tests, and the real data directory."""

import os
import pathlib

# Must be set before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def data_dir() -> pathlib.Path:
  """The real XQuAD-R / MLQA-R copy: $HBT_DATA_DIR, else ../shared/data beside the repo."""
  path = pathlib.Path(os.environ.get('HBT_DATA_DIR', REPO.parent / 'shared' / 'data'))
  if not (path / 'xquad-r' / 'en.json').exists():
    pytest.skip(f'real data not found at {path}; set HBT_DATA_DIR')
  return path
