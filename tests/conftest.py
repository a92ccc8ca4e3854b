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


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory) -> pathlib.Path:
  """A tiny random XLM-R checkpoint in the HF layout (2 layers, hidden 32, 100-word vocab)."""
  from tests import test_weights  # pylint: disable=g-import-not-at-top (imports torch: only here)
  folder = tmp_path_factory.mktemp('tiny_xlmr')
  test_weights.write_checkpoint(folder, 'xlmr')
  return folder
