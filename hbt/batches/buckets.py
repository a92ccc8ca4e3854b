"""The padded lengths of token batches, one table for training shards and evaluation encoding.

A batch is padded to the smallest bucket that holds its longest text, so the jitted functions see
a handful of shapes (each compiles once) and short texts are not padded to the longest.
"""

import bisect

from absl import logging
import numpy as np

BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def lengths(max_length: int) -> tuple[int, ...]:
  """The padded lengths of texts of at most `max_length` tokens: BUCKETS capped at it."""
  return tuple(sorted({min(b, max_length) for b in BUCKETS} | {max_length}))


def bucket(n: int, max_length: int) -> int:
  """The smallest of `lengths(max_length)` that is >= n; max_length if n is longer."""
  for b in lengths(max_length):
    if b >= n:
      return b
  return max_length


def pack_rows(lengths: np.ndarray, pack_length: int) -> list[list[int]]:
  """Best fit decreasing: the indices of `lengths` (each <= pack_length) in rows of at most
  pack_length tokens. Longest first, each text goes to the open row it leaves the least room in
  (the first such row), else to a new row; rows in the order they were opened."""
  rows, open_rows = [], []  # open_rows: sorted (room left, row)
  for i in np.argsort(-np.asarray(lengths), kind='stable'):
    n = int(lengths[i])
    at = bisect.bisect_left(open_rows, (n, -1))
    if at < len(open_rows):
      room, row = open_rows.pop(at)
      rows[row].append(int(i))
    else:
      room, row = pack_length, len(rows)
      rows.append([int(i)])
    if room > n:
      bisect.insort(open_rows, (room - n, row))
  return rows


def fit_pack(train_config, batch_shards: int) -> int:
  """Sets and returns train_config.pack_texts: at most its value, such that the packed rows of a
  batch split evenly over `batch_shards` devices (1 packs nothing); logs a lowered value."""
  want, size = train_config.pack_texts, train_config.batch_size
  fits = [p for p in range(want, 0, -1) if size % p == 0 and (size // p) % batch_shards == 0]
  pack = fits[0] if fits else 1
  if pack != want:
    logging.info('config.train.pack_texts=%d: %d texts per row instead, so that the rows of a '
                 'batch of %d split over %d devices', want, pack, size, batch_shards)
    train_config.pack_texts = pack
  return pack
