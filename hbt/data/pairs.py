"""Training pairs for the dual encoder: (query, positive, hard negatives) per language and id.

A `PairSet` holds, for every language, the parallel ids it has and, for every (language, id), one
`Example`: the query text, its positive passage and optional hard negatives. Ids are parallel across
languages: the examples of one id in two languages are translations of each other, so a query in one
language and the positive of the same id in another form a cross-lingual pair.

Sources:
  * `from_benchmark(benchmark)`: every question of every language of a parallel QA benchmark
    (XQuAD-R, MLQA-R), paired with its answer sentence; no hard negatives.
  * `from_jsonl(path)`: a JSON Lines file, one JSON object per line (UTF-8):

        {"id": "q17", "lang": "de", "query": "Wer ...?", "positive": "Der ...", "negatives": []}

    - `id` (str, non-empty): the parallel id, shared by the translations of one example.
    - `lang` (str): an ISO 639-1 code from the allowed set (default `KNOWN_LANGS`).
    - `query` (str, non-empty): the query text.
    - `positive` (str, non-empty): the relevant passage.
    - `negatives` (optional list of non-empty str, or null): hard negatives; absent means none.

    No other fields are allowed (a misspelt field is an error, not silently ignored). Blank lines
    are skipped. An (id, lang) may appear only once. Every error names the file and line number.
    Texts are empty when they hold only whitespace; they are otherwise kept verbatim.

`to_jsonl` writes the same format (language by language, ids in `PairSet.ids` order), so
`from_jsonl(to_jsonl(pairs))` gives back an equal PairSet. `split_ids` splits a PairSet by parallel
id into a training and a held-out validation part.

Positive groups: distinct ids can share a positive (in XQuAD-R, several questions are answered by
one sentence). `PairSet.groups` puts two ids in one group when some language gives them the same
positive text (and, transitively, links through further ids); the translations of a shared answer
sentence thus land in one group too. In a batch, a pair's own group's other positives are not
negatives (the loss masks them), and `split_ids` keeps each group on one side of the split.
"""

from collections.abc import Collection, Iterable, Mapping
import dataclasses
import functools
import hashlib
import json
import os
import types

from hbt import io
from hbt.data.types import Benchmark

# ISO 639-1 codes the project knows: the XQuAD-R / MLQA-R languages plus common others.
KNOWN_LANGS = frozenset((
    'af', 'am', 'ar', 'az', 'be', 'bg', 'bn', 'bs', 'ca', 'cs', 'cy', 'da', 'de', 'el', 'en', 'eo',
    'es', 'et', 'eu', 'fa', 'fi', 'fr', 'ga', 'gl', 'gu', 'ha', 'he', 'hi', 'hr', 'hu', 'hy', 'id',
    'ig', 'is', 'it', 'ja', 'jv', 'ka', 'kk', 'km', 'kn', 'ko', 'ku', 'ky', 'la', 'lo', 'lt', 'lv',
    'mg', 'mk', 'ml', 'mn', 'mr', 'ms', 'my', 'ne', 'nl', 'no', 'or', 'pa', 'pl', 'ps', 'pt', 'ro',
    'ru', 'sa', 'sd', 'si', 'sk', 'sl', 'so', 'sq', 'sr', 'su', 'sv', 'sw', 'ta', 'te', 'tg', 'th',
    'tl', 'tr', 'ug', 'uk', 'ur', 'uz', 'vi', 'xh', 'yi', 'yo', 'zh', 'zu',
))

_REQUIRED_FIELDS = ('id', 'lang', 'query', 'positive')
_FIELDS = frozenset(_REQUIRED_FIELDS + ('negatives',))


@dataclasses.dataclass(frozen=True)
class Example:
  """One training example: a query, its positive passage and optional hard negatives."""

  query: str
  positive: str
  negatives: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PairSet:
  """Training pairs, per language and parallel id.

  Build one with `from_benchmark`, `from_jsonl` or `split_ids`; the constructor checks that the
  three fields agree.

  Attributes:
    langs: the languages, in order; each has at least one id.
    ids: for each language, its parallel ids (unique, in source order).
    examples: for each (lang, id), its Example.
  """

  langs: tuple[str, ...]
  ids: Mapping[str, tuple[str, ...]]
  examples: Mapping[tuple[str, str], Example]

  def __post_init__(self):
    if set(self.ids) != set(self.langs) or len(set(self.langs)) != len(self.langs):
      raise ValueError(f'PairSet: ids has languages {sorted(self.ids)}, langs is {self.langs}')
    for lang in self.langs:
      if not self.ids[lang]:
        raise ValueError(f'PairSet: language {lang!r} has no ids')
      if len(set(self.ids[lang])) != len(self.ids[lang]):
        raise ValueError(f'PairSet: language {lang!r} lists an id twice')
    keys = {(lang, i) for lang in self.langs for i in self.ids[lang]}
    if keys != set(self.examples):
      raise ValueError('PairSet: examples do not match ids')

  def __len__(self) -> int:
    """The number of (language, id) pairs."""
    return len(self.examples)

  def query(self, lang: str, qid: str) -> str:
    """The query text of `qid` in `lang`."""
    return self.examples[(lang, qid)].query

  def positive(self, lang: str, qid: str) -> str:
    """The positive passage of `qid` in `lang`."""
    return self.examples[(lang, qid)].positive

  def negatives(self, lang: str, qid: str) -> tuple[str, ...]:
    """The hard negatives of `qid` in `lang` (possibly none)."""
    return self.examples[(lang, qid)].negatives

  def all_ids(self) -> tuple[str, ...]:
    """Every distinct parallel id, sorted."""
    return tuple(sorted({i for lang in self.langs for i in self.ids[lang]}))

  def langs_of(self, qid: str) -> tuple[str, ...]:
    """The languages that have `qid`, in `langs` order."""
    return tuple(lang for lang in self.langs if (lang, qid) in self.examples)

  @functools.cached_property
  def groups(self) -> Mapping[str, int]:
    """The positive group of every id: ids linked by an equal positive text in any language.

    Groups are numbered 0, 1, ... in the order of their smallest id, so the numbering depends only
    on the pairs.
    """
    parent = {qid: qid for qid in self.all_ids()}

    def root(qid):
      while parent[qid] != qid:
        parent[qid] = parent[parent[qid]]
        qid = parent[qid]
      return qid

    first = {}  # positive text -> the first id that has it
    for (_, qid), example in self.examples.items():
      other = first.setdefault(example.positive, qid)
      a, b = root(qid), root(other)
      if a != b:
        parent[max(a, b)] = min(a, b)
    roots = {qid: root(qid) for qid in parent}
    number = {r: n for n, r in enumerate(sorted(set(roots.values())))}
    return types.MappingProxyType({qid: number[r] for qid, r in roots.items()})

  @functools.cached_property
  def _text_groups(self) -> Mapping[str, int]:
    return {example.positive: self.groups[qid] for (_, qid), example in self.examples.items()}

  def text_group(self, text: str) -> int:
    """The group of the ids whose positive `text` is, or -1 if it is nobody's positive."""
    return self._text_groups.get(text, -1)

  def subset(self, keep: Collection[str]) -> 'PairSet':
    """The pairs whose id is in `keep`; languages left without ids are dropped."""
    return _build(
        ((lang, i, self.examples[(lang, i)]) for lang in self.langs for i in self.ids[lang]
         if i in keep))

  def in_langs(self, langs: Collection[str]) -> 'PairSet':
    """The pairs of the languages in `langs` (in this PairSet's language order)."""
    return _build(
        ((lang, i, self.examples[(lang, i)]) for lang in self.langs if lang in langs
         for i in self.ids[lang]))

  @classmethod
  def from_benchmark(cls, benchmark: Benchmark) -> 'PairSet':
    """See the module function `from_benchmark`."""
    return from_benchmark(benchmark)

  @classmethod
  def from_jsonl(cls, path: str | os.PathLike,
                 allowed_langs: Collection[str] | None = None) -> 'PairSet':
    """See the module function `from_jsonl`."""
    return from_jsonl(path, allowed_langs)

  def to_jsonl(self, path: str | os.PathLike) -> None:
    """See the module function `to_jsonl`."""
    to_jsonl(self, path)


def _build(rows: Iterable[tuple[str, str, Example]]) -> PairSet:
  """A PairSet from (lang, id, example) rows, in order; the caller guarantees uniqueness."""
  ids: dict[str, list[str]] = {}
  examples: dict[tuple[str, str], Example] = {}
  for lang, qid, example in rows:
    ids.setdefault(lang, []).append(qid)
    examples[(lang, qid)] = example
  return PairSet(
      langs=tuple(ids),
      ids=types.MappingProxyType({lang: tuple(v) for lang, v in ids.items()}),
      examples=types.MappingProxyType(examples))


def from_benchmark(benchmark: Benchmark) -> PairSet:
  """Every (question, answer sentence) of every language of a parallel QA benchmark.

  Args:
    benchmark: e.g. XQuAD-R or MLQA-R; its question ids are the parallel ids.

  Returns:
    A PairSet with the benchmark's languages (in its order) and no hard negatives.

  Raises:
    ValueError: a language lists a question id twice, or a question or answer text is empty.
  """
  rows = []
  for lang in benchmark.langs:
    split = benchmark[lang]
    seen = set()
    for qid, query, answer in zip(split.query_ids, split.queries, split.answer):
      where = f'{benchmark.name}: language {lang!r}, id {qid!r}'
      if qid in seen:
        raise ValueError(f'{where}: id appears twice in language {lang!r}')
      seen.add(qid)
      positive = split.candidates[int(answer)]
      if not query.strip() or not positive.strip():
        raise ValueError(f'{where}: empty query or answer sentence')
      rows.append((lang, qid, Example(query, positive)))
  return _build(rows)


def _check_text(value, field: str, where: str) -> str:
  """`value` if it is a non-blank string, else a ValueError naming `where` and the field."""
  if not isinstance(value, str):
    raise ValueError(f'{where}: field {field!r} must be a string, got {type(value).__name__}')
  if not value.strip():
    raise ValueError(f'{where}: field {field!r} is empty')
  return value


def _parse_record(obj: dict, where: str,
                  allowed_langs: Collection[str]) -> tuple[str, str, Example]:
  """One JSONL object as (lang, id, Example); errors name `where` (file:line)."""
  missing = [f for f in _REQUIRED_FIELDS if f not in obj]
  if missing:
    raise ValueError(f'{where}: missing field(s) {missing}')
  unknown = sorted(set(obj) - _FIELDS)
  if unknown:
    raise ValueError(f'{where}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}')
  qid = _check_text(obj['id'], 'id', where)
  lang = _check_text(obj['lang'], 'lang', where)
  if lang not in allowed_langs:
    raise ValueError(f'{where}: unknown language {lang!r}; allowed: {sorted(allowed_langs)}')
  query = _check_text(obj['query'], 'query', where)
  positive = _check_text(obj['positive'], 'positive', where)
  negatives = obj.get('negatives')
  if negatives is None:
    negatives = []
  if not isinstance(negatives, list):
    raise ValueError(f'{where}: field \'negatives\' must be a list, got {type(negatives).__name__}')
  negatives = tuple(_check_text(n, f'negatives[{k}]', where) for k, n in enumerate(negatives))
  return lang, qid, Example(query, positive, negatives)


def from_jsonl(path: str | os.PathLike, allowed_langs: Collection[str] | None = None) -> PairSet:
  """Reads a PairSet from a JSON Lines file in the format of the module docstring.

  Args:
    path: the file (UTF-8).
    allowed_langs: the language codes accepted; default `KNOWN_LANGS`.

  Returns:
    The PairSet; languages in order of first appearance, ids in file order.

  Raises:
    ValueError: naming the file and line number, for a malformed line, a missing, unknown or
      wrongly typed field, an empty text, a language outside `allowed_langs`, or an id that appears
      twice in one language; naming the file, if it holds no pairs.
  """
  allowed = KNOWN_LANGS if allowed_langs is None else frozenset(allowed_langs)
  rows = []
  first_line = {}
  for number, obj in io.read_jsonl(path):
    where = f'{os.fspath(path)}:{number}'
    lang, qid, example = _parse_record(obj, where, allowed)
    if (lang, qid) in first_line:
      raise ValueError(f'{where}: id {qid!r} appears twice in language {lang!r} '
                       f'(first on line {first_line[(lang, qid)]})')
    first_line[(lang, qid)] = number
    rows.append((lang, qid, example))
  if not rows:
    raise ValueError(f'{os.fspath(path)}: no pairs')
  return _build(rows)


def to_jsonl(pairs: PairSet, path: str | os.PathLike) -> None:
  """Writes `pairs` in the JSONL format of the module docstring (UTF-8, language by language).

  Args:
    pairs: the pairs to write.
    path: the output file; overwritten.
  """
  with open(path, 'w', encoding='utf-8') as f:
    for lang in pairs.langs:
      for qid in pairs.ids[lang]:
        example = pairs.examples[(lang, qid)]
        obj = {'id': qid, 'lang': lang, 'query': example.query, 'positive': example.positive}
        if example.negatives:
          obj['negatives'] = list(example.negatives)
        f.write(json.dumps(obj, ensure_ascii=False) + '\n')


def _unit_hash(qid: str, seed: int) -> float:
  """A deterministic number in [0, 1) from (seed, id), independent of Python's hash salt."""
  digest = hashlib.sha256(f'{seed}\x00{qid}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def split_ids(pairs: PairSet, val_fraction: float, seed: int = 0) -> tuple[PairSet, PairSet]:
  """Splits `pairs` by parallel id into a training and a held-out validation part.

  A positive group (`PairSet.groups`) goes to validation iff sha256(seed, its smallest id), read as
  a number in [0, 1), is below `val_fraction`; so all languages of an id, and all ids that share a
  positive, land on the same side (no validation positive is a training positive), the split
  depends only on (group, seed) (not on file order), and the validation share is `val_fraction`
  in expectation, not exactly. A side may be empty (a PairSet with no languages).

  Args:
    pairs: the pairs to split.
    val_fraction: the expected share of ids held out, in [0, 1].
    seed: varies the split.

  Returns:
    (train, val) PairSets.

  Raises:
    ValueError: val_fraction outside [0, 1].
  """
  if (isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float))
      or not 0.0 <= val_fraction <= 1.0):
    raise ValueError(f'val_fraction must be in [0, 1], got {val_fraction!r}')
  smallest = {}
  for qid, group in pairs.groups.items():
    smallest[group] = min(qid, smallest.get(group, qid))
  val = {i for i, group in pairs.groups.items() if _unit_hash(smallest[group], seed) < val_fraction}
  train = {i for i in pairs.all_ids() if i not in val}
  return pairs.subset(train), pairs.subset(val)
