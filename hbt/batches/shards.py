"""Pre-materialised global batches: every step's tokenised batch, written once as TFRecord shards.

`prepare` draws the batch of every step from a `Sampler`, tokenises it, pads it to a bucket length
and writes one `tf.train.Example` per global batch. The folder is named after a hash of everything
that determines the batches, so a second run with the same config reuses it and a changed config
writes a new one. `input_pipeline.make_dataset` reads it back.

Folder `out_root/<hash[:16]>/`:
  * `shard-<i>-of-<S>.tfrecord`: shard i holds steps i, i+S, i+2S, ... (round robin), so reading
    the shards in a cycle gives the steps in order.
  * `manifest.json`: written last; its presence means the folder is complete (see `prepare`).
Every file is written under a temporary name (`.<name>.tmp-<pid>-<random>`) and renamed into
place; temporary files an interrupted run left behind are ignored.

Record schema (one `tf.train.Example` per step; B pairs, k hard negatives per pair):
  * 'step' int64 [1]; 'kind' bytes [1] ('mono', 'cross' or 'mixed').
  * 'ids', 'query_langs', 'positive_langs': bytes [B] (utf-8).
  * 'query_tokens', 'query_mask': int64 [B * Lq] (row-major), 'query_shape' int64 [2] = (B, Lq).
  * 'positive_tokens', 'positive_mask': int64 [B * Lp], 'positive_shape' int64 [2] = (B, Lp).
  * k > 0 only: 'negative_tokens', 'negative_mask': int64 [B * k * Ln],
    'negative_shape' int64 [3] = (B, k, Ln).
  * 'query_group', 'positive_group': int64 [B], each pair's positive group (`PairSet.groups`);
    k > 0 only: 'negative_group' int64 [B * k], the group whose positive the hard negative's text
    is, or -1. The loss leaves a query's own group out of its negatives.
  * prepared with `parallel` only (the alignment terms): the sides 'query2' (each id's query in
    its positive's language) and 'positive2' (its positive in its query's language), with
    tokens, mask, shape and group as 'query' and 'positive'.
Tokens are right-padded with the tokenizer's pad id; masks are 1 on real tokens, 0 on padding.
Each of Lq, Lp, Ln is the smallest bucket length (see `hbt.batches.buckets`) that holds the longest text
of its side in that batch, so the train step sees only a few distinct shapes.

Packed batches (`pack_texts` = n > 1): each side's texts go to windows of the side's max length W
(best fit decreasing, `buckets.pack_rows`), and the windows fill B / n rows of w windows each, w
the fewest that hold them all (the last windows may be empty). So 'query_*' and 'positive_*' are
[B / n, w, W] and 'negative_*' [B * k / n, w, W] (shape rank 3), n texts per row on average. The
mask holds each token's text id: i + 1 for the side's text i (pair-major for negatives), 0 on
padding. No text crosses a window, so attention runs within each window
(`hbt.train.step.embed_texts` hands the encoder the windows as rows): an attention cost of
w * W^2 per row instead of (w * W)^2, and few shapes (B / n and W are fixed, w varies little).
`hbt.model.encoder.Encoder` (num_texts) reads such rows with block-diagonal attention and pools
each text on its own.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf
import tqdm

from etils import epath

from hbt import io
from hbt.batches import buckets
from hbt.batches import input_pipeline
from hbt.batches import sampler as sampler_lib
from hbt.data.pairs import PairSet
from hbt.model import tokenizer as tokenizer_lib

FORMAT_VERSION = 2  # 2: positive groups
# Packed rows as windows (the module docstring); in the hash, so folders packed otherwise are not
# reused.
PACK_LAYOUT = 'windows'
MANIFEST = input_pipeline.MANIFEST
DEFAULT_NUM_SHARDS = 8
HASH_PREFIX = 16
SIDES = ('query', 'positive', 'negative', 'query2', 'positive2')


def _json_default(value):
  """JSON encoding of the few non-JSON types a config may hold; a TypeError for others."""
  if isinstance(value, (np.bool_,)):
    return bool(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if isinstance(value, (set, frozenset)):
    return sorted(value)
  raise TypeError(f'config_hash: cannot hash a value of type {type(value).__name__}: {value!r}')


def canonical_json(fields: Mapping) -> str:
  """`fields` as canonical JSON: sorted keys, no whitespace, tuples as lists."""
  return json.dumps(fields, sort_keys=True, separators=(',', ':'), ensure_ascii=False,
                    allow_nan=False, default=_json_default)


def config_hash(fields: Mapping) -> str:
  """The sha256 (hex) of the canonical JSON of `fields`.

  Args:
    fields: everything that determines the batches (data source, train langs, val fraction, seed,
      sampler arguments, batch size, steps, max lengths, hard negatives, tokenizer identity), as
      JSON-serialisable values (numpy scalars and paths are accepted).

  Returns:
    64 hex digits.

  Raises:
    TypeError: a value cannot be encoded as JSON.
  """
  return hashlib.sha256(canonical_json(fields).encode('utf-8')).hexdigest()


truncate = tokenizer_lib.truncate  # cuts ids to a max length, keeping the closing special token


pad = tokenizer_lib.pad_batch  # right-pads id arrays to ids and mask [len(seqs), length]


def shard_names(num_shards: int) -> list[str]:
  """The file names of `num_shards` shards."""
  return [f'shard-{i:05d}-of-{num_shards:05d}.tfrecord' for i in range(num_shards)]


def _untruncated(tokenizer):
  """A copy of `tokenizer` that does not truncate (so truncation can be counted), if it can be."""
  if dataclasses.is_dataclass(tokenizer) and any(
      f.name == 'max_length' for f in dataclasses.fields(tokenizer)):
    return dataclasses.replace(tokenizer, max_length=sys.maxsize)
  return tokenizer


def _cap(max_length: int, tokenizer) -> int:
  """`max_length`, lowered to the tokenizer's own limit (the model's positions) if it has one."""
  limit = getattr(tokenizer, 'max_length', None)
  return int(max_length) if limit is None else min(int(max_length), int(limit))


@dataclasses.dataclass
class EncodedSide:
  """Tokenised, padded texts of one side of one batch, their lengths before truncation, and the
  positive group of each text (see `PairSet.groups`; -1 for a text that is nobody's positive)."""

  tokens: np.ndarray
  mask: np.ndarray
  lengths: list[int]
  group: np.ndarray | None = None


def pack(seqs: Sequence[np.ndarray], rows: int, window: int,
         pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Packs token id arrays (each at most `window` long) into `rows` rows of windows: (tokens,
  text ids), both int32 [rows, w, window].

  Best fit decreasing (`buckets.pack_rows`) puts every text in a window of `window` tokens; the
  windows, in the order they were opened, fill the rows row-major, w = ceil(windows / rows), and
  any left over are empty. Within a window texts lie in contiguous runs, text i's tokens marked
  i + 1, padding 0.
  """
  lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
  if lengths.size and lengths.max() > window:
    raise ValueError(f'a text of {lengths.max()} tokens does not fit a window of {window}')
  members = buckets.pack_rows(lengths, window)
  w = max(1, -(-len(members) // rows))
  members += [[]] * (rows * w - len(members))
  tokens, ids = tokenizer_lib.fill_packed(list(seqs), members, window, pad_id)
  return tokens.reshape(rows, w, window), ids.reshape(rows, w, window)


def _encode_side(tokenizer, texts: Sequence[str], kind: str, max_length: int,
                 pack_texts: int = 1) -> EncodedSide:
  """Tokenises `texts` in one call, truncates to `max_length`, pads to a bucket length (or packs
  them `pack_texts` to a row on average, if > 1, in windows of max_length: `pack`)."""
  encoded = tokenizer.encode(list(texts), kind)
  lengths = [len(ids) for ids in encoded]
  kept = [truncate(ids, max_length) for ids in encoded]
  if pack_texts > 1:
    tokens, mask = pack(kept, len(kept) // pack_texts, max_length, tokenizer.pad_id)
  else:
    length = buckets.bucket(max((len(ids) for ids in kept), default=1), max_length)
    tokens, mask = pad(kept, length, tokenizer.pad_id)
  return EncodedSide(tokens, mask, lengths)


def _negative_texts(pairs: PairSet, batch: sampler_lib.Batch, k: int) -> list[str]:
  """The first k hard negatives of each pair (positive language), flattened pair-major."""
  texts = []
  for lang, qid in zip(batch.positive_langs, batch.ids):
    negatives = pairs.negatives(lang, qid)
    if len(negatives) < k:
      raise ValueError(f'pair (lang={lang!r}, id={qid!r}) has {len(negatives)} hard negatives, '
                       f'but hard_negatives={k} (step {batch.step})')
    texts.extend(negatives[:k])
  return texts


def encode_batch(batch: sampler_lib.Batch, pairs: PairSet, tokenizer, max_query_length: int,
                 max_passage_length: int, hard_negatives: int = 0,
                 parallel: bool = False, pack_texts: int = 1) -> dict[str, EncodedSide]:
  """The tokenised sides of one batch: 'query', 'positive', if hard_negatives > 0 'negative', and
  if `parallel` 'query2' and 'positive2' (the id's query in the positive's language and positive
  in the query's language; for a same-language pair, the same texts).

  Negative tokens and mask are [B, k, Ln]; the others [B, L]. With pack_texts = n > 1 the sides are
  packed (see the module docstring): [B / n, w, W], negatives [B * k / n, w, W].

  Raises:
    ValueError: a pair has fewer than `hard_negatives` negatives (names its lang and id), or
      pack_texts does not divide the batch size.
  """
  if len(batch) % pack_texts:
    raise ValueError(f'pack_texts={pack_texts} must divide the batch size {len(batch)}')
  full = _untruncated(tokenizer)
  max_query_length = _cap(max_query_length, tokenizer)
  max_passage_length = _cap(max_passage_length, tokenizer)
  queries, positives = sampler_lib.batch_texts(pairs, batch)
  groups = np.array([pairs.groups[qid] for qid in batch.ids], np.int64)
  sides = {'query': _encode_side(full, queries, 'query', max_query_length, pack_texts),
           'positive': _encode_side(full, positives, 'passage', max_passage_length, pack_texts)}
  sides['query'].group = sides['positive'].group = groups
  if parallel:
    swapped = dataclasses.replace(batch, query_langs=batch.positive_langs,
                                  positive_langs=batch.query_langs)
    queries2, positives2 = sampler_lib.batch_texts(pairs, swapped)
    sides['query2'] = _encode_side(full, queries2, 'query', max_query_length, pack_texts)
    sides['positive2'] = _encode_side(full, positives2, 'passage', max_passage_length,
                                      pack_texts)
    sides['query2'].group = sides['positive2'].group = groups
  if hard_negatives > 0:
    texts = _negative_texts(pairs, batch, hard_negatives)
    neg = _encode_side(full, texts, 'passage', max_passage_length, pack_texts)
    neg.group = np.array([pairs.text_group(t) for t in texts], np.int64).reshape(
        len(batch), hard_negatives)
    if pack_texts > 1:
      sides['negative'] = neg
      return sides
    shape = (len(batch), hard_negatives, neg.tokens.shape[-1])
    sides['negative'] = EncodedSide(neg.tokens.reshape(shape), neg.mask.reshape(shape),
                                    neg.lengths, neg.group)
  return sides


def _bytes_feature(values: Sequence[str]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode('utf-8') for v in values]))


def _int_feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values).ravel().tolist()))


def to_example(batch: sampler_lib.Batch, sides: Mapping[str, EncodedSide]) -> bytes:
  """The serialised tf.train.Example of one global batch (schema in the module docstring)."""
  feature = {
      'step': _int_feature([batch.step]),
      'kind': _bytes_feature([batch.kind]),
      'ids': _bytes_feature(batch.ids),
      'query_langs': _bytes_feature(batch.query_langs),
      'positive_langs': _bytes_feature(batch.positive_langs),
  }
  for name, side in sides.items():
    feature[f'{name}_tokens'] = _int_feature(side.tokens)
    feature[f'{name}_mask'] = _int_feature(side.mask)
    feature[f'{name}_shape'] = _int_feature(side.tokens.shape)
    feature[f'{name}_group'] = _int_feature(side.group)
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _length_stats(lengths: Sequence[int], max_length: int) -> dict:
  """Token-length statistics before truncation, and how many texts were truncated."""
  a = np.asarray(lengths, np.int64)
  if not len(a):
    return {'num_texts': 0}
  return {'num_texts': int(len(a)), 'mean': float(a.mean()),
          'p50': float(np.percentile(a, 50)), 'p95': float(np.percentile(a, 95)),
          'max': int(a.max()), 'max_length': int(max_length),
          'truncated': int(np.count_nonzero(a > max_length))}


def _length_key(side: EncodedSide, packed: bool) -> str:
  """A side's token shape in the manifest's counts: its length, or 'wxW' for packed rows (w
  windows of W tokens per row)."""
  shape = side.tokens.shape
  return 'x'.join(map(str, shape[1:])) if packed else str(shape[-1])


def _hashed(fields: Mapping, batch_size: int, num_steps: int, max_query_length: int,
            max_passage_length: int, hard_negatives: int, pad_id: int,
            parallel: bool = False, pack_texts: int = 1) -> dict:
  """What the folder hash covers: the caller's fields plus prepare's own arguments ('parallel'
  and 'pack_texts' only when set, so folders prepared without them keep their hash)."""
  return {'fields': fields,
          'prepare': {'format_version': FORMAT_VERSION, 'batch_size': batch_size,
                      'num_steps': num_steps, 'max_query_length': max_query_length,
                      'max_passage_length': max_passage_length,
                      'hard_negatives': hard_negatives, 'pad_id': pad_id,
                      'buckets': buckets.BUCKETS, **({'parallel': True} if parallel else {}),
                      **({'pack_texts': pack_texts, 'pack_layout': PACK_LAYOUT}
                         if pack_texts > 1 else {})}}


def _check_prepare_args(num_steps, max_query_length, max_passage_length, hard_negatives,
                        num_shards, pack_texts) -> None:
  for name, value, low in (('num_steps', num_steps, 1), ('max_query_length', max_query_length, 2),
                           ('max_passage_length', max_passage_length, 2),
                           ('hard_negatives', hard_negatives, 0), ('num_shards', num_shards, 1),
                           ('pack_texts', pack_texts, 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')


def prepare(out_root: str | os.PathLike, fields: Mapping, sampler: sampler_lib.Sampler,
            pairs: PairSet, tokenizer, num_steps: int, max_query_length: int,
            max_passage_length: int, hard_negatives: int = 0,
            num_shards: int = DEFAULT_NUM_SHARDS, progress: bool = True,
            parallel: bool = False, pack_texts: int = 1) -> epath.Path:
  """Writes (or reuses) the tokenised global batches of steps 0 .. num_steps-1.

  The folder is `out_root/<hash[:16]>/`, the hash being `config_hash` of `fields` together with
  this function's own arguments (batch size, num_steps, max lengths, hard_negatives, pad id, bucket
  set, format version; not num_shards, which changes the layout but not the batches). If it holds
  a manifest with that hash, it is returned as is. Otherwise every shard and then the manifest are
  (re)written.

  Texts longer than the max length (lowered to the tokenizer's own `max_length` if that is
  smaller) are cut to it, keeping the final special token.

  The manifest (`manifest.json`) holds: 'format_version', 'hash', 'fields', 'prepare' (the
  hashed arguments), 'num_steps', 'batch_size', 'hard_negatives', 'max_query_length',
  'max_passage_length' (after capping), 'pad_id', 'num_shards', 'shards' (file names, shard i
  holding steps i, i+S, ...), 'describe' (`sampler.describe` of the batches), 'lengths' (per side:
  num_texts, mean, p50, p95, max of the lengths before truncation, and 'truncated'), 'buckets'
  (per side: the allowed lengths and the count of batches padded to each), 'shapes' (count of
  batches per 'Lq,Lp' or 'Lq,Lp,Ln'; packed: 'wxW', w windows of W per row), 'fill' (per side:
  real tokens / padded tokens),
  'pack_texts' and 'false_negatives' (the (query, candidate) pairs the loss masks as in-batch false
  negatives, see `false_negative_count`: total, mean and max per batch, batches with any).

  Args:
    out_root: the folder holding shard folders.
    fields: everything that determines the batches (see `config_hash`); stored in the manifest.
    sampler: draws the batch of each step.
    pairs: the PairSet the sampler draws from (texts and negatives).
    tokenizer: has `encode(texts, kind) -> list of int arrays` and `pad_id` (a TextTokenizer).
    num_steps: how many steps to write.
    max_query_length: the most tokens of a query, specials included.
    max_passage_length: the most tokens of a positive or negative, specials included.
    hard_negatives: k, the hard negatives per pair (the first k of the pair's positive language).
    num_shards: how many TFRecord files (at most num_steps are used).
    progress: show a progress bar.
    parallel: also write the 'query2' and 'positive2' sides (the alignment terms'); the manifest
      says 'parallel': true.
    pack_texts: texts per row of a packed batch (see the module docstring); 1 = one per row.

  Returns:
    The shard folder.

  Raises:
    ValueError: a bad argument; a pair with fewer than `hard_negatives` negatives (naming its
      language and id); the folder holds the manifest of a different config (a hash collision).
  """
  _check_prepare_args(num_steps, max_query_length, max_passage_length, hard_negatives, num_shards,
                      pack_texts)
  if sampler.batch_size % pack_texts:
    raise ValueError(f'pack_texts={pack_texts} must divide the batch size {sampler.batch_size}')
  num_steps, hard_negatives = int(num_steps), int(hard_negatives)
  max_q = _cap(max_query_length, tokenizer)
  max_p = _cap(max_passage_length, tokenizer)
  hashed = _hashed(fields, sampler.batch_size, num_steps, max_q, max_p, hard_negatives,
                   int(tokenizer.pad_id), parallel, int(pack_texts))
  digest = config_hash(hashed)
  folder = io.path(out_root) / digest[:HASH_PREFIX]
  try:
    manifest = input_pipeline.read_manifest(folder)
  except (FileNotFoundError, ValueError):  # absent or unreadable: (re)write the folder
    manifest = None
  if manifest is not None:
    if manifest.get('hash') != digest:
      raise ValueError(f'{folder} holds the batches of another config (hash '
                       f'{manifest.get("hash")}, expected {digest})')
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  num_shards = min(int(num_shards), num_steps)
  names = shard_names(num_shards)
  summary = _write_shards(folder, names, sampler, pairs, tokenizer, num_steps, max_q, max_p,
                          hard_negatives, progress, parallel, int(pack_texts))
  manifest = {
      'format_version': FORMAT_VERSION, 'hash': digest, 'fields': fields,
      'prepare': hashed['prepare'], 'num_steps': num_steps, 'batch_size': sampler.batch_size,
      'hard_negatives': hard_negatives, 'max_query_length': max_q, 'max_passage_length': max_p,
      'pad_id': int(tokenizer.pad_id), 'pack_texts': int(pack_texts), 'num_shards': num_shards,
      'shards': names, 'parallel': bool(parallel), **summary}
  io.write_atomic(folder / MANIFEST,
                  json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False,
                             default=_json_default).encode('utf-8'))
  return folder


def false_negative_count(sides: Mapping[str, EncodedSide]) -> int:
  """In one batch, the (query, candidate) pairs the loss masks: another pair's positive, or a hard
  negative, in the query's own positive group."""
  groups = sides['positive'].group
  count = int((groups[:, None] == groups[None, :]).sum()) - len(groups)
  if 'negative' in sides:
    count += int((groups[:, None] == sides['negative'].group.reshape(-1)[None, :]).sum())
  return count


def _write_shards(folder: epath.Path, names: Sequence[str], sampler, pairs, tokenizer,
                  num_steps: int, max_q: int, max_p: int, hard_negatives: int,
                  progress: bool, parallel: bool = False, pack_texts: int = 1) -> dict:
  """Writes every step round robin into the shards; returns the manifest's summary fields."""
  finals = [folder / name for name in names]
  tmps = [io.tmp_name(path) for path in finals]
  max_lengths = {'query': max_q, 'positive': max_p, 'negative': max_p, 'query2': max_q,
                 'positive2': max_p}
  lengths = {side: [] for side in SIDES}
  counts = {side: {} for side in SIDES}
  fill = {side: [0, 0] for side in SIDES}  # real tokens, padded tokens
  shapes = {}
  batches, masked = [], []
  writers = [tf.io.TFRecordWriter(str(tmp)) for tmp in tmps]
  try:
    for step in tqdm.trange(num_steps, desc='prepare batches', unit='batch',
                            disable=not progress):
      batch = sampler.batch(step)
      sides = encode_batch(batch, pairs, tokenizer, max_q, max_p, hard_negatives, parallel,
                           pack_texts)
      writers[step % len(writers)].write(to_example(batch, sides))
      batches.append(batch)
      masked.append(false_negative_count(sides))
      keys = {name: _length_key(side, pack_texts > 1) for name, side in sides.items()}
      for name, side in sides.items():
        lengths[name].extend(side.lengths)
        counts[name][keys[name]] = counts[name].get(keys[name], 0) + 1
        fill[name][0] += int(np.count_nonzero(side.mask))
        fill[name][1] += int(side.mask.size)
      shape = ','.join(keys.values())
      shapes[shape] = shapes.get(shape, 0) + 1
  except BaseException:
    for writer in writers:
      writer.close()
    for tmp in tmps:
      tmp.unlink(missing_ok=True)
    raise
  for writer in writers:
    writer.close()
  for tmp, path in zip(tmps, finals):
    tmp.replace(path)
  used = [side for side in SIDES if (side != 'negative' or hard_negatives > 0) and
          (not side.endswith('2') or parallel)]
  return {
      'describe': sampler_lib.describe(batches),
      'lengths': {side: _length_stats(lengths[side], max_lengths[side]) for side in used},
      'buckets': {side: {'allowed': list(buckets.lengths(max_lengths[side])),
                         'counts': dict(sorted(counts[side].items(), key=lambda kv: [
                             int(n) for n in kv[0].split('x')]))}
                  for side in used},
      'shapes': dict(sorted(shapes.items())),
      'false_negatives': {'masked': int(sum(masked)), 'per_batch': float(np.mean(masked)),
                          'max_per_batch': int(max(masked)),
                          'batches_with_any': int(np.count_nonzero(masked))},
      'fill': {side: round(fill[side][0] / max(fill[side][1], 1), 4) for side in used},
  }
