"""Encoding many texts: length-sorted, packed several to a row or padded to length buckets.

Packed (`pack_length` > 0, the default of evaluation): the texts of at most `pack_length` tokens,
longest first, go to rows of `pack_length` tokens, each into the open row it fills best (best fit
decreasing), several texts per row; the encoder sees block-diagonal attention and pools per text
(hbt.model.encoder, `num_texts`), so the embeddings equal those of one text per row, with almost
no padding. Every packed batch has one shape: `batch_tokens // pack_length` rows and the same
number of text slots (the most texts any batch holds, rounded up to a power of two), so it compiles
once. Longer texts, and every text when `pack_length` is 0, are padded to length buckets instead:
batches of about `batch_tokens` tokens (batch size = batch_tokens // bucket length, rounded to a
multiple of the device count), one compiled shape per bucket.

A jitted encoder called again with the same plan compiles nothing; the device works while the host
prepares the next batch (dispatch is async).

Under jax.distributed every process tokenises and pads the whole global batch, and hands in only the
rows of its own devices (`sharding.global_array`); the embeddings are gathered to every process.
"""

import time

from absl import logging
import numpy as np
import tqdm

from hbt import sharding
from hbt.batches import buckets
from hbt.model import tokenizer as tokenizer_lib


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_length: int, multiple: int = 1):
  """[(padded length, row indices, batch size)] covering every row once, longest bucket first."""
  order = np.argsort(-lengths, kind='stable')
  by_length = {}
  for i in order:
    by_length.setdefault(buckets.bucket(int(lengths[i]), max_length), []).append(i)
  plan = []
  for length in sorted(by_length, reverse=True):
    rows = by_length[length]
    size = max(multiple, (batch_tokens // length) // multiple * multiple)
    plan += [(length, np.asarray(rows[s:s + size]), size) for s in range(0, len(rows), size)]
  return plan


def plan_packed(lengths: np.ndarray, batch_tokens: int, max_length: int, pack_length: int,
                multiple: int = 1):
  """The plan of `encode_texts`: [(length, rows, batch size, num_texts)], every text once.

  Texts longer than pack_length (all, if it is 0): plan_batches' bucketed batches, `rows` the
  text indices one per row, num_texts None. The others: batches of `batch size` packed rows of
  pack_length tokens (`buckets.pack_rows`), `rows` a list of each row's text indices, num_texts
  the text slots of every packed batch (the most texts a batch holds, up to a power of two and a
  multiple of `multiple`).
  """
  pack_length = min(pack_length, max_length)
  long = np.flatnonzero(lengths > pack_length) if pack_length else np.arange(len(lengths))
  plan = [(length, long[rows], size, None)
          for length, rows, size in plan_batches(lengths[long], batch_tokens, max_length, multiple)]
  if not pack_length:
    return plan
  short = np.flatnonzero(lengths <= pack_length)
  rows = [[int(short[i]) for i in row]
          for row in buckets.pack_rows(lengths[short], pack_length)]
  size = max(multiple, (batch_tokens // pack_length) // multiple * multiple)
  batches = [rows[s:s + size] for s in range(0, len(rows), size)]
  most = max((sum(map(len, b)) for b in batches), default=1)
  num_texts = -(-(1 << (most - 1).bit_length()) // multiple) * multiple
  return plan + [(pack_length, b, size, num_texts) for b in batches]


def encode_texts(encode_fn, params, token_ids: list[np.ndarray], pad_id: int, *,
                 batch_tokens: int, max_length: int, pack_length: int = 0, multiple: int = 1,
                 batch_sharding=None, desc: str = 'encode', progress: bool = True) -> np.ndarray:
  """Embeddings [len(token_ids), D] (float32) in input order.

  Args:
    encode_fn: jitted (params, ids [B, L], mask [B, L]) -> embeddings [B, D], and (params, ids,
      text ids, num_texts) -> [num_texts, D] for packed rows, num_texts static
      (hbt.eval.run.make_encode_fn).
    params: the encoder params.
    token_ids: one int32 array per text (specials included).
    pad_id: the padding token id.
    batch_tokens: tokens per batch (padded); sets the batch size of each bucket.
    max_length: the longest bucket.
    pack_length: the length of packed rows; texts up to it are packed several to a row; 0 packs
      nothing (encode_fn then needs no num_texts).
    multiple: batch sizes are multiples of it (the number of data-parallel devices).
    batch_sharding: the sharding of encode_fn's ids and mask (sharding.batch_sharding(mesh)):
      batches become global arrays, as every process must give them under jax.distributed; None
      passes numpy arrays (one process).
    desc: progress bar label.
    progress: show a progress bar with texts/s, tokens/s and ETA.
  """
  lengths = np.fromiter((len(t) for t in token_ids), np.int64, len(token_ids))
  plan = plan_packed(lengths, batch_tokens, max_length, pack_length, multiple)
  logging.info('%s: %d texts in %d batches of %d shapes', desc, len(token_ids), len(plan),
               len({(length, size, num) for length, _, size, num in plan}))
  bar = tqdm.tqdm(total=len(token_ids), desc=desc, unit='text', disable=not progress,
                  mininterval=1.0, smoothing=0.1)
  outputs, start, tokens = [], time.perf_counter(), 0
  for length, rows, size, num_texts in plan:
    if num_texts is None:
      seqs = [token_ids[i][:length] for i in rows]
      seqs += [seqs[0][:1]] * (size - len(seqs))  # pad the last batch of a bucket to its size
      ids, mask = tokenizer_lib.pad_batch(seqs, length, pad_id)
      extra = ()
    else:
      texts = np.concatenate(rows)
      members, at = [], 0
      for row in rows + [[]] * (size - len(rows)):  # empty rows fill the last batch
        members.append(range(at, at + len(row)))
        at += len(row)
      ids, mask = tokenizer_lib.fill_packed([token_ids[i] for i in texts], members, length,
                                            pad_id)
      rows, extra = texts, (num_texts,)
    if batch_sharding is not None:
      ids, mask = (sharding.global_array(x, batch_sharding) for x in (ids, mask))
    outputs.append((rows, encode_fn(params, ids, mask, *extra)))
    if len(outputs) > 2:  # keep two batches in flight, so the bar shows finished work
      outputs[-3][1].block_until_ready()
    tokens += int(lengths[rows].sum())
    bar.update(len(rows))
    bar.set_postfix_str(f'{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s',
                        refresh=False)
  dim = outputs[0][1].shape[-1] if outputs else 0
  out = np.zeros((len(token_ids), dim), np.float32)
  for rows, emb in outputs:
    out[rows] = sharding.to_host(emb)[:len(rows)]
  bar.close()
  return out
