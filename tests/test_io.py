"""hbt.io: remote-safe paths, atomic writes, JSON, the cache directory."""

import json
import os

from etils.epath import backend
import pytest
import tensorflow as tf

from hbt import io


def test_remote_paths_keep_their_scheme(tmp_path):
  p = io.path('gs://bucket/runs/x') / 'eval' / 'a.json'
  assert os.fspath(p) == 'gs://bucket/runs/x/eval/a.json'
  assert not io.is_local(p)
  assert p._backend is not backend.os_backend  # pylint: disable=protected-access
  assert io.path(tmp_path)._backend is backend.os_backend  # pylint: disable=protected-access
  assert io.is_local(tmp_path) and os.fspath(io.path(tmp_path)) == str(tmp_path)
  assert os.fspath(io.path('~/x')) == os.path.expanduser('~/x')


def test_unknown_scheme_is_a_value_error_naming_the_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=r'gcs://b/x: unknown scheme \(etils.epath knows gs://'):
    io.path('gcs://b/x')  # epath's own error: KeyError: 'gcs://'
  assert not list(tmp_path.iterdir())


def test_atomic_writes_and_reads_on_a_non_local_file_system(ram_workdir, tmp_path):
  root = io.path(ram_workdir)
  assert not io.is_local(root) and os.fspath(root / 'sub') == f'{ram_workdir}/sub'
  io.write_json(root / 'sub' / 'r.json', {'a': 1})
  io.write_json(f'{ram_workdir}/sub/r.json', {'a': 2})
  io.write_atomic(root / 'sub' / 'r.jsonl', b'{"a": 1}\n\n{"a": 2}\n')
  assert io.read_json(root / 'sub' / 'r.json') == {'a': 2}
  assert list(io.read_jsonl(root / 'sub' / 'r.jsonl')) == [(1, {'a': 1}), (3, {'a': 2})]
  assert sorted(tf.io.gfile.listdir(f'{ram_workdir}/sub')) == ['r.json', 'r.jsonl']  # no temporary
  assert not list(tmp_path.iterdir())  # the working directory: nothing under a folder 'ram:'


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


def test_read_jsonl_numbers_lines_and_keeps_u2028_in_its_line(tmp_path):
  rows = [{'id': 'a', 'text': 'one\u2028two'}, {'id': 'b', 'text': 'ÄÖÜ'}]
  lines = [json.dumps(rows[0], ensure_ascii=False), '', '  ', json.dumps(rows[1])]
  (tmp_path / 'r.jsonl').write_text('\r\n'.join(lines) + '\n', encoding='utf-8')
  assert list(io.read_jsonl(tmp_path / 'r.jsonl')) == [(1, rows[0]), (4, rows[1])]
  assert list(io.read_jsonl(str(tmp_path / 'r.jsonl'))) == [(1, rows[0]), (4, rows[1])]


@pytest.mark.parametrize('content, message', [
    (b'{"a": 1}\n\n{"a": 2\n', r'bad.jsonl:3: not valid JSON: .*column 8'),
    (b'{"a": 1}\n[1, 2]\n', 'bad.jsonl:2: expected a JSON object, got list'),
    (b'{"a": 1}\n{"a": "\xff"}\n', r'bad.jsonl:2: not UTF-8 \(byte 7'),
])
def test_read_jsonl_errors_name_file_and_line(tmp_path, content, message):
  (tmp_path / 'bad.jsonl').write_bytes(content)
  with pytest.raises(ValueError, match=message):
    list(io.read_jsonl(tmp_path / 'bad.jsonl'))


def test_cache_dir_expands_home_in_both_forms(monkeypatch):
  monkeypatch.setenv('HBT_CACHE_DIR', '~/hbt-cache')
  assert str(io.cache_dir()) == os.path.expanduser('~/hbt-cache')
  monkeypatch.delenv('HBT_CACHE_DIR')
  assert str(io.cache_dir()) == os.path.expanduser('~/.cache/hbt')
