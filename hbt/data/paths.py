"""Where benchmark files live, and how a missing one is fetched from its pinned public URL.

Resolution order of the data directory: the configured one (`config.data.dir`), then $HBT_DATA_DIR,
then `<cache>/data` with <cache> = $HBT_CACHE_DIR or ~/.cache/hbt. A file already present in the
data directory is used as it is; a missing one is downloaded, checked against its SHA-256 and
written atomically.
"""

import hashlib
import http.client
import os
import pathlib
import urllib.request

from hbt import io
from hbt.data import sources

ENV_DATA_DIR = 'HBT_DATA_DIR'
DOWNLOAD_TIMEOUT_S = 60.0


class DataFileNotFoundError(FileNotFoundError):
  """A benchmark file is neither in the data directory nor downloadable."""


class ChecksumError(OSError):
  """A downloaded benchmark file does not have its pinned SHA-256."""


def resolve_data_dir(configured: str | os.PathLike | None) -> pathlib.Path:
  """The data directory: `configured` if set, else $HBT_DATA_DIR, else <io.cache_dir()>/data.

  Args:
    configured: the configured directory (config field `config.data.dir`); None or '' if unset.

  Returns:
    The directory path (it need not exist yet).
  """
  if configured:
    return pathlib.Path(configured).expanduser()
  from_env = os.environ.get(ENV_DATA_DIR)
  if from_env:
    return pathlib.Path(from_env).expanduser()
  return io.cache_dir() / 'data'


def sha256_hex(payload: bytes) -> str:
  """Hex SHA-256 digest of `payload`."""
  return hashlib.sha256(payload).hexdigest()


def fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
  """The body of `url` (urllib, with a timeout).

  Raises:
    OSError (e.g. urllib.error.URLError), http.client.HTTPException: the request failed.
  """
  with urllib.request.urlopen(url, timeout=timeout) as response:
    return response.read()


def benchmark_file(benchmark: str, lang: str, data_dir: str | os.PathLike) -> pathlib.Path:
  """The path of one language file, `<data_dir>/<folder>/<lang>.json`, downloading it if missing.

  Args:
    benchmark: registry name, 'xquad_r' or 'mlqa_r'.
    lang: language code of the benchmark.
    data_dir: the data directory (see resolve_data_dir).

  Returns:
    The path of the file, which exists on return.

  Raises:
    ValueError: unknown benchmark or language.
    DataFileNotFoundError: the file is missing and could not be downloaded.
    ChecksumError: the downloaded bytes do not have the pinned SHA-256 (nothing is written).
  """
  source = sources.get(benchmark)
  sources.validate_langs(benchmark, [lang], field='lang')
  path = pathlib.Path(data_dir) / source.folder / f'{lang}.json'
  if path.is_file():
    return path
  url = source.url(lang)
  try:
    payload = fetch(url)
  except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError.
    raise DataFileNotFoundError(
        f'{path} does not exist and downloading it from {url} failed ({err}). Set '
        f'--config.data.dir or ${ENV_DATA_DIR} to a directory holding xquad-r/ and mlqa-r/ '
        f'(e.g. ../shared/data).') from err
  expected = source.sha256[lang]
  actual = sha256_hex(payload)
  if actual != expected:
    raise ChecksumError(
        f'{path}: SHA-256 mismatch for the download from {url}: expected {expected}, got {actual}; '
        'nothing was written.')
  io.write_atomic(path, payload)
  return path
