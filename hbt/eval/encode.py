"""Encoding many texts with length bucketing: sort by length, pad each batch to its bucket only.

Batches hold about `batch_tokens` tokens (batch size = batch_tokens // bucket length, rounded to a
multiple of the device count), so a handful of shapes compile once each, short texts are not padded
to the longest, and the device works while the host prepares the next batch (dispatch is async).
"""

import time

import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from hbt.batches import buckets
from hbt.model import tokenizer as tokenizer_lib


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_length: int, multiple: int = 1):
  """[(padded length, row indices)] covering every row once, longest bucket first."""
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


def encode_texts(encode_fn, params, token_ids: list[np.ndarray], pad_id: int, *,
                 batch_tokens: int, max_length: int, multiple: int = 1, desc: str = 'encode',
                 progress: bool = True) -> np.ndarray:
  """Embeddings [len(token_ids), D] (float32) in input order.

  Args:
    encode_fn: jitted (params, ids [B, L], mask [B, L]) -> embeddings [B, D].
    params: the encoder params.
    token_ids: one int32 array per text (specials included).
    pad_id: the padding token id.
    batch_tokens: tokens per batch (padded); sets the batch size of each bucket.
    max_length: the longest bucket.
    multiple: batch sizes are multiples of it (the number of data-parallel devices).
    desc: progress bar label.
    progress: show a progress bar with texts/s, tokens/s and ETA.
  """
  lengths = np.fromiter((len(t) for t in token_ids), np.int64, len(token_ids))
  plan = plan_batches(lengths, batch_tokens, max_length, multiple)
  bar = tqdm.tqdm(total=len(token_ids), desc=desc, unit='text', disable=not progress,
                  mininterval=1.0, smoothing=0.1)
  outputs, start, tokens = [], time.perf_counter(), 0
  for length, rows, size in plan:
    seqs = [token_ids[i][:length] for i in rows]
    seqs += [seqs[0][:1]] * (size - len(seqs))  # pad the last batch of a bucket to its size
    ids, mask = tokenizer_lib.pad_batch(seqs, length, pad_id)
    outputs.append((rows, encode_fn(params, ids, mask)))
    if len(outputs) > 2:  # keep two batches in flight, so the bar shows finished work
      outputs[-3][1].block_until_ready()
    tokens += int(lengths[rows].sum())
    bar.update(len(rows))
    bar.set_postfix_str(f'{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s',
                        refresh=False)
  dim = outputs[0][1].shape[-1] if outputs else 0
  out = np.zeros((len(token_ids), dim), np.float32)
  for rows, emb in outputs:
    out[rows] = to_host(emb)[:len(rows)]
  bar.close()
  return out


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-process sharded) array as a float32 numpy array on every process."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float32)
  return np.asarray(x, np.float32)
