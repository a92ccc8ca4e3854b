"""Encoding many texts with length bucketing: sort by length, pad each batch to its bucket only.

Batches hold about `batch_tokens` tokens (batch size = batch_tokens // bucket length, rounded to a
multiple of the device count), so a handful of shapes compile once each (one per bucket: a jitted
encoder called again with the same buckets compiles nothing), short texts are not padded to the
longest, and the device works while the host prepares the next batch (dispatch is async).

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
                 batch_tokens: int, max_length: int, multiple: int = 1, batch_sharding=None,
                 desc: str = 'encode', progress: bool = True) -> np.ndarray:
  """Embeddings [len(token_ids), D] (float32) in input order.

  Args:
    encode_fn: jitted (params, ids [B, L], mask [B, L]) -> embeddings [B, D].
    params: the encoder params.
    token_ids: one int32 array per text (specials included).
    pad_id: the padding token id.
    batch_tokens: tokens per batch (padded); sets the batch size of each bucket.
    max_length: the longest bucket.
    multiple: batch sizes are multiples of it (the number of data-parallel devices).
    batch_sharding: the sharding of encode_fn's ids and mask (sharding.batch_sharding(mesh)):
      batches become global arrays, as every process must give them under jax.distributed; None
      passes numpy arrays (one process).
    desc: progress bar label.
    progress: show a progress bar with texts/s, tokens/s and ETA.
  """
  lengths = np.fromiter((len(t) for t in token_ids), np.int64, len(token_ids))
  plan = plan_batches(lengths, batch_tokens, max_length, multiple)
  logging.info('%s: %d texts in %d batches of %d shapes', desc, len(token_ids), len(plan),
               len({(length, size) for length, _, size in plan}))
  bar = tqdm.tqdm(total=len(token_ids), desc=desc, unit='text', disable=not progress,
                  mininterval=1.0, smoothing=0.1)
  outputs, start, tokens = [], time.perf_counter(), 0
  for length, rows, size in plan:
    seqs = [token_ids[i][:length] for i in rows]
    seqs += [seqs[0][:1]] * (size - len(seqs))  # pad the last batch of a bucket to its size
    ids, mask = tokenizer_lib.pad_batch(seqs, length, pad_id)
    if batch_sharding is not None:
      ids, mask = (sharding.global_array(x, batch_sharding) for x in (ids, mask))
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
    out[rows] = sharding.to_host(emb)[:len(rows)]
  bar.close()
  return out

