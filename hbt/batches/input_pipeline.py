"""Reads the pre-materialised global batches of `shards.prepare` back as a tf.data pipeline.

The shard files are interleaved in a fixed cycle, one record at a time, so records come back in step
order (shard i holds steps i, i+S, ...). Every process reads every global batch and keeps its own
contiguous slice of rows, so all devices see the same step, and hence one batch kind, at a time.

Element of the dataset (B global pairs, P processes, b = B / P rows per process):
  * 'step': int32 scalar; 'kind': string scalar.
  * 'ids', 'query_langs', 'positive_langs': string [b].
  * 'query_tokens', 'query_mask': int32 [b, Lq]; 'positive_tokens', 'positive_mask': int32 [b, Lp].
  * with hard negatives only: 'negative_tokens', 'negative_mask': int32 [b, k, Ln].
  * 'query_group', 'positive_group': int32 [b]; with hard negatives 'negative_group' int32 [b, k]
    (positive groups: the loss masks in-batch false negatives with them).
  * 'query_lang', 'positive_lang': int32 [b], each language's index in LANGS (-1: not in it).
  * shards prepared with parallel sides only: 'query2_*' and 'positive2_*' as 'query_*' and
    'positive_*' (each id's query in the positive's language, its positive in the query's).
Packed shards (manifest 'pack_texts' = n > 1): 'query_*' and 'positive_*' are [b / n, w, W] and
'negative_*' [b * k / n, w, W] (rows of w windows of W tokens), the mask holding text ids (see
`shards`); each process gets its contiguous slice of rows.
"""

from collections.abc import Iterator
import os

import numpy as np
import tensorflow as tf

from hbt import io
from hbt.data import pairs as pairs_lib

MANIFEST = 'manifest.json'  # Written last by `shards.prepare`: its presence marks a complete folder.
STRING_KEYS = ('ids', 'query_langs', 'positive_langs')
# The language vocabulary of the batches' language ids (the language discriminator's classes).
LANGS = tuple(sorted(pairs_lib.KNOWN_LANGS))


def read_manifest(shard_dir: str | os.PathLike) -> dict:
  """The manifest of a complete shard folder (local or remote, e.g. gs://).

  Raises:
    FileNotFoundError: the folder has no manifest (not prepared, or preparation was interrupted).
    ValueError: the manifest is not valid JSON (names the file).
  """
  path = io.path(shard_dir) / MANIFEST
  if not path.exists():
    raise FileNotFoundError(f'{path} is missing: {shard_dir} is not a complete shard folder '
                            '(run the prepare step)')
  return io.read_json(path)


def _sides(manifest: dict) -> tuple[str, ...]:
  return (('query', 'positive') + (('negative',) if manifest['hard_negatives'] > 0 else ()) +
          (('query2', 'positive2') if manifest.get('parallel') else ()))


def _feature_spec(manifest: dict) -> dict:
  """The parse spec of one record (see shards' schema)."""
  b = manifest['batch_size']
  spec = {'step': tf.io.FixedLenFeature([], tf.int64),
          'kind': tf.io.FixedLenFeature([], tf.string)}
  for key in STRING_KEYS:
    spec[key] = tf.io.FixedLenFeature([b], tf.string)
  packed = manifest.get('pack_texts', 1) > 1
  for side in _sides(manifest):
    rank = 3 if side == 'negative' or packed else 2
    spec[f'{side}_shape'] = tf.io.FixedLenFeature([rank], tf.int64)
    for part in ('tokens', 'mask'):
      spec[f'{side}_{part}'] = tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)
    spec[f'{side}_group'] = tf.io.FixedLenFeature(
        [b * manifest['hard_negatives'] if side == 'negative' else b], tf.int64)
  return spec


def _parser(manifest: dict, process_index: int, process_count: int):
  """A function from a serialised record to this process's slice of the batch."""
  spec = _feature_spec(manifest)
  sides = _sides(manifest)
  rows = manifest['batch_size'] // process_count
  start = process_index * rows
  k = manifest['hard_negatives']
  pack = manifest.get('pack_texts', 1)
  # Leading dim per process: pairs, or packed rows (negatives: k texts per pair).
  side_rows = {side: rows if pack == 1 else rows * (k if side == 'negative' else 1) // pack
               for side in sides}

  langs = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(LANGS), tf.range(len(LANGS))), -1)

  def parse(record):
    x = tf.io.parse_single_example(record, spec)
    out = {'step': tf.cast(x['step'], tf.int32), 'kind': x['kind']}
    for key in STRING_KEYS:
      out[key] = x[key][start:start + rows]
    out['query_lang'] = langs.lookup(out['query_langs'])
    out['positive_lang'] = langs.lookup(out['positive_langs'])
    for side in sides:
      shape = tf.cast(x[f'{side}_shape'], tf.int32)
      n = side_rows[side]
      static = ([rows, k, None] if side == 'negative' and pack == 1 else
                [n, None, None] if pack > 1 else [n, None])
      first = process_index * n
      for part in ('tokens', 'mask'):
        value = tf.reshape(tf.cast(x[f'{side}_{part}'], tf.int32), shape)[first:first + n]
        out[f'{side}_{part}'] = tf.ensure_shape(value, static)
      group = tf.cast(x[f'{side}_group'], tf.int32)
      if side == 'negative':
        group = tf.reshape(group, [-1, k])
      out[f'{side}_group'] = group[start:start + rows]
    return out

  return parse


def _shard_reads(num_shards: int, start_step: int) -> list[tuple[int, int]]:
  """(shard, records to skip) in the cycle order that makes step `start_step` come first."""
  first = start_step % num_shards
  order = list(range(first, num_shards)) + list(range(first))
  return [(i, max(0, -(-(start_step - i) // num_shards))) for i in order]


def make_dataset(shard_dir: str | os.PathLike, *, start_step: int = 0, process_index: int = 0,
                 process_count: int = 1, prefetch: int = 2) -> tf.data.Dataset:
  """The batches of steps start_step .. num_steps-1, in order, sliced to this process's rows.

  Args:
    shard_dir: a folder written by `shards.prepare`.
    start_step: the first step to read (to resume a run); num_steps gives an empty dataset.
    process_index: this process, in [0, process_count).
    process_count: how many processes share each global batch; must divide the batch size.
      Process p gets rows [p * B / P, (p + 1) * B / P).
    prefetch: how many batches to prefetch (0: none).

  Returns:
    A dataset of dicts (see the module docstring).

  Raises:
    FileNotFoundError: the folder has no manifest.
    ValueError: process_count does not divide the batch size, or a bad index or start_step.
  """
  manifest = read_manifest(shard_dir)
  b, num_steps = manifest['batch_size'], manifest['num_steps']
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got {process_index}')
  if b % process_count:
    raise ValueError(f'process_count {process_count} does not divide the batch size {b}')
  pack = manifest.get('pack_texts', 1)
  if (b // process_count) % pack:
    raise ValueError(f'{process_count} processes cannot share the packed rows of {shard_dir}: '
                     f'pack_texts={pack} must divide the {b // process_count} pairs per process')
  if not 0 <= start_step <= num_steps:
    raise ValueError(f'start_step must be in [0, {num_steps}], got {start_step}')
  folder = io.path(shard_dir)
  reads = _shard_reads(len(manifest['shards']), start_step)
  files = [str(folder / manifest['shards'][i]) for i, _ in reads]
  skips = [skip for _, skip in reads]
  sources = tf.data.Dataset.from_tensor_slices((files, tf.constant(skips, tf.int64)))
  records = sources.interleave(
      lambda path, skip: tf.data.TFRecordDataset(path).skip(skip),
      cycle_length=len(files), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  dataset = records.map(_parser(manifest, process_index, process_count),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if prefetch:
    dataset = dataset.prefetch(prefetch)
  return dataset


def _to_numpy(element: dict) -> dict:
  """Strings decoded to str (numpy str arrays, 'kind' a str), 'step' an int, the rest as is."""
  out = {}
  for key, value in element.items():
    if key == 'kind':
      out[key] = value.decode('utf-8')
    elif key == 'step':
      out[key] = int(value)
    elif key in STRING_KEYS:
      out[key] = np.array([v.decode('utf-8') for v in value])
    else:
      out[key] = value
  return out


def as_numpy(dataset: tf.data.Dataset) -> Iterator[dict]:
  """The elements of a `make_dataset` dataset as dicts of numpy arrays.

  Token and mask arrays are int32 numpy arrays; 'ids' and the language arrays numpy str arrays;
  'step' a Python int and 'kind' a Python str.
  """
  for element in dataset.as_numpy_iterator():
    yield _to_numpy(element)
