"""hbt.io: remote-safe paths, atomic writes, JSON, the cache directory."""

import os

from etils import epath
import pytest

from hbt import io


@pytest.fixture(scope='module')
def ram_root():
  """A remote-style URI served by tf.io.gfile's in-memory file system (ram://)."""
  epath.register_path_cls('ram://')(epath.gpath.PosixGPath)
  return 'ram://bucket/run'


def test_remote_paths_keep_their_scheme(tmp_path):
  p = io.path('gs://bucket/runs/x') / 'eval' / 'a.json'
  assert os.fspath(p) == 'gs://bucket/runs/x/eval/a.json'
  assert not io.is_local(p)
  assert io.is_local(tmp_path) and os.fspath(io.path(tmp_path)) == str(tmp_path)
  assert os.fspath(io.path('~/x')) == os.path.expanduser('~/x')


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / 'sub' / 'r.json'
  io.write_json(target, {'a': 1})
  io.write_json(str(target), {'a': 2})
  assert io.read_json(target) == {'a': 2}
  assert [p.name for p in target.parent.iterdir()] == ['r.json']


def test_write_and_read_on_a_remote_file_system(ram_root):
  io.write_json(f'{ram_root}/eval/r.json', {'mono': 0.8})
  assert io.read_json(io.path(ram_root) / 'eval' / 'r.json') == {'mono': 0.8}


def test_read_json_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.json'):
    io.read_json(tmp_path / 'missing.json')
  (tmp_path / 'bad.json').write_text('{not json')
  with pytest.raises(ValueError, match='bad.json'):
    io.read_json(tmp_path / 'bad.json')


def test_cache_dir_expands_home_in_both_forms(monkeypatch):
  monkeypatch.setenv('HBT_CACHE_DIR', '~/hbt-cache')
  assert str(io.cache_dir()) == os.path.expanduser('~/hbt-cache')
  monkeypatch.delenv('HBT_CACHE_DIR')
  assert str(io.cache_dir()) == os.path.expanduser('~/.cache/hbt')
