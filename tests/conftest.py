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


@pytest.fixture
def ram_workdir(monkeypatch, tmp_path) -> str:
  """A workdir on a non-local file system: `ram://...`, tf.io.gfile's in-memory one.

  etils.epath knows only gs://, s3://, az:// and hf:// (another scheme is a KeyError), so this
  teaches it `ram://` the way it knows gs:// with TensorFlow installed: through its
  tf.io.gfile backend. A gs:// workdir then takes the same code paths (epath's tf backend,
  tf.io.gfile, TFRecord and TensorBoard writers) against another tf.io.gfile file system; GCS
  itself is never reached. The working directory is `tmp_path`, where a path that lost its scheme
  would show up as a folder `ram:`. The files are removed afterwards (the file system lives as long
  as the process).
  """
  from etils.epath import backend, gpath, register  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access  (epath has no public way to add a scheme; etils is pinned)
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, 'ram://', gpath.PosixGPath)
  monkeypatch.setattr(gpath, '_URI_PREFIXES', gpath._URI_PREFIXES + ('ram://',))
  monkeypatch.setattr(gpath, '_URI_SCHEMES', gpath._URI_SCHEMES | {'ram'})
  monkeypatch.setitem(gpath._URI_MAP_ROOT, 'ram://', '/ram/')
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'ram', backend.tf_backend)
  # pylint: enable=protected-access
  monkeypatch.chdir(tmp_path)
  root = f'ram://hbt-{tmp_path.name}'
  yield root
  if tf.io.gfile.exists(root):
    tf.io.gfile.rmtree(root)
