"""Small file utilities shared by every stage: paths that may be remote, atomic writes, JSON and
JSON Lines, cache.

Every path that may live on remote storage (a `gs://` workdir, shards, checkpoints, reports,
metrics) goes through `path`, an `etils.epath.Path` (what orbax uses): a local path stays a local
path, and `gs://bucket/x` keeps its scheme (pathlib would make it a local folder `gs:`) and is read
and written through tf.io.gfile (checkpoint arrays: by orbax, through tensorstore). Tested on
tf.io.gfile's in-memory `ram://` file system (tests/conftest.py, `ram_workdir`), never on GCS.
"""

from collections.abc import Iterator
import json
import os
import pathlib
import secrets

from etils import epath

ENV_CACHE_DIR = 'HBT_CACHE_DIR'
DEFAULT_CACHE_DIR = '~/.cache/hbt'


def path(p: epath.PathLike) -> epath.Path:
  """`p` as an epath.Path: local paths as given (~ expanded), remote URIs with their scheme.

  Raises:
    ValueError: `p` has a scheme epath does not know (epath's own error is `KeyError: 'x://'`).
  """
  p = os.fspath(p)
  if '://' not in p:
    return epath.Path(os.path.expanduser(p))
  try:
    return epath.Path(p)
  except KeyError:
    raise ValueError(f'{p}: unknown scheme (etils.epath knows gs://, s3://, az://, hf://; a '
                     'local path has none)') from None


def is_local(p: epath.PathLike) -> bool:
  """Whether `p` is a path on this machine's file system (no `scheme://`)."""
  return '://' not in os.fspath(p)


def tmp_name(p: epath.PathLike) -> epath.Path:
  """A temporary name beside `p`, unique per process and call; readers skip names with a dot."""
  p = path(p)
  return p.with_name(f'.{p.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}')


def write_atomic(p: epath.PathLike, data: bytes) -> None:
  """Writes `data` to `p` through a temporary file in the same folder and a rename.

  A reader never sees a truncated file: it sees the old one or the new one. Local files are
  fsynced before the rename; on object stores (gs://) the rename is a copy, still all or nothing.
  """
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = tmp_name(p)
  try:
    if is_local(p):
      with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    else:
      tmp.write_bytes(data)
    tmp.replace(p)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_json(p: epath.PathLike, obj) -> None:
  """`obj` as indented JSON (sorted keys), written atomically."""
  write_atomic(p, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False).encode('utf-8'))


def read_json(p: epath.PathLike):
  """The JSON content of `p`.

  Raises:
    FileNotFoundError: `p` does not exist.
    ValueError: `p` is not valid UTF-8 JSON (the message names the file).
  """
  p = path(p)
  if not p.exists():
    raise FileNotFoundError(f'{p} does not exist')
  try:
    return json.loads(p.read_bytes().decode('utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{p} is not valid JSON: {e}') from e


def read_jsonl(p: epath.PathLike) -> Iterator[tuple[int, dict]]:
  """(line number, object) for each non-blank line of a JSON Lines file (UTF-8), in file order.

  Lines end at a line feed only, so a text holding U+2028 (which `json.dumps(...,
  ensure_ascii=False)` leaves unescaped) stays on its line.

  Raises:
    ValueError: naming the file and line (`file:line: ...`), for a line that is not UTF-8, not
      valid JSON or not a JSON object.
  """
  p = path(p)
  with p.open('rb') as f:
    for number, raw in enumerate(f, start=1):
      try:
        line = raw.decode('utf-8')
      except UnicodeDecodeError as e:
        raise ValueError(f'{p}:{number}: not UTF-8 (byte {e.start}: {e.reason})') from None
      if not line.strip():
        continue
      try:
        obj = json.loads(line.rstrip('\r\n'))
      except json.JSONDecodeError as e:
        raise ValueError(f'{p}:{number}: not valid JSON: {e.msg} (column {e.colno})') from None
      if not isinstance(obj, dict):
        raise ValueError(f'{p}:{number}: expected a JSON object, got {type(obj).__name__}')
      yield number, obj


def cache_dir() -> pathlib.Path:
  """The local hbt cache directory: $HBT_CACHE_DIR, else ~/.cache/hbt (~ expanded in both)."""
  return pathlib.Path(os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR).expanduser()
