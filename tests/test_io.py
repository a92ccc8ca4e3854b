"""hbt.io: remote-safe paths, atomic writes, JSON, the cache directory."""

import os

from etils.epath import backend
import pytest

from hbt import io


def test_remote_paths_keep_their_scheme(tmp_path):
  p = io.path('gs://bucket/runs/x') / 'eval' / 'a.json'
  assert os.fspath(p) == 'gs://bucket/runs/x/eval/a.json'
  assert not io.is_local(p)
  assert p._backend is not backend.os_backend  # pylint: disable=protected-access
  assert io.path(tmp_path)._backend is backend.os_backend  # pylint: disable=protected-access
  assert io.is_local(tmp_path) and os.fspath(io.path(tmp_path)) == str(tmp_path)
  assert os.fspath(io.path('~/x')) == os.path.expanduser('~/x')


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / 'sub' / 'r.json'
  io.write_json(target, {'a': 1})
  io.write_json(str(target), {'a': 2})
  assert io.read_json(target) == {'a': 2}
  assert [p.name for p in target.parent.iterdir()] == ['r.json']


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
