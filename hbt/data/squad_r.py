"""Readers of SQuAD-R files (XQuAD-R, MLQA-R): SQuAD JSON with sentence breaks per paragraph.

A file holds `data[].paragraphs[]`, each with `context`, `sentences[]`, `sentence_breaks[]`
([start, end) character offsets into `context`) and `qas[]` (`id`, `question`,
`answers[].answer_start`). The candidates of a language are all sentences of all paragraphs in file
order (not deduplicated); a question's answer is the sentence whose break span holds its first
answer's `answer_start`.
"""

from collections.abc import Iterable, Sequence
import json
import os
import pathlib
from typing import Any

import numpy as np

from hbt.data import paths
from hbt.data import sources
from hbt.data import types


class DataError(ValueError):
  """A benchmark file is malformed; the message names the file and the record."""


def _get(record: Any, key: str, kind: type, where: str, path: os.PathLike) -> Any:
  """`record[key]`, checked to be of type `kind`; DataError naming file, record and field if not."""
  if not isinstance(record, dict):
    raise DataError(f'{path}: {where}: expected an object, got {type(record).__name__}')
  if key not in record:
    raise DataError(f'{path}: {where}: missing field {key!r}')
  value = record[key]
  # bool is an int subclass; a flag is never a valid offset.
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise DataError(f'{path}: {where}.{key}: expected {kind.__name__}, got {type(value).__name__}')
  return value


def _load_json(path: pathlib.Path) -> Any:
  """The parsed JSON of `path`; DataError naming file, line and column if it is not JSON."""
  try:
    raw = path.read_bytes()
  except OSError as err:
    raise DataError(f'{path}: cannot read: {err}') from err
  try:
    return json.loads(raw)
  except json.JSONDecodeError as err:
    raise DataError(
        f'{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}') from err
  except UnicodeDecodeError as err:
    raise DataError(f'{path}: not UTF-8 text: {err}') from err


def _sentence_breaks(paragraph: dict, where: str, path: pathlib.Path) -> list[tuple[int, int]]:
  """The checked (start, end) break spans of one paragraph."""
  if isinstance(paragraph, dict) and 'sentence_breaks' not in paragraph:
    raise DataError(f'{path}: {where}: missing field \'sentence_breaks\' (a SQuAD-R file with '
                    'sentence breaks is expected, not plain SQuAD)')
  breaks = _get(paragraph, 'sentence_breaks', list, where, path)
  spans = []
  for k, span in enumerate(breaks):
    if (not isinstance(span, list) or len(span) != 2 or
        not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
      raise DataError(f'{path}: {where}.sentence_breaks[{k}]: expected [start, end] integers, '
                      f'got {span!r}')
    spans.append((span[0], span[1]))
  return spans


def _sentences(paragraph: dict, num_breaks: int, where: str, path: pathlib.Path) -> list[str]:
  """The checked sentence texts of one paragraph, one per sentence break."""
  sentences = _get(paragraph, 'sentences', list, where, path)
  if len(sentences) != num_breaks:
    raise DataError(f'{path}: {where}: {len(sentences)} sentences but {num_breaks} '
                    'sentence_breaks')
  if not sentences:
    raise DataError(f'{path}: {where}: paragraph has no sentences')
  for k, text in enumerate(sentences):
    if not isinstance(text, str):
      raise DataError(f'{path}: {where}.sentences[{k}]: expected str, got {type(text).__name__}')
    if not text.strip():
      raise DataError(f'{path}: {where}.sentences[{k}]: empty sentence text')
  return sentences


def _answer_sentence(answer_start: int, spans: Sequence[tuple[int, int]]) -> int | None:
  """Index of the span with start <= answer_start < end, or None."""
  for k, (start, end) in enumerate(spans):
    if start <= answer_start < end:
      return k
  return None


def _question(qa: dict, spans: Sequence[tuple[int, int]], where: str,
              path: pathlib.Path) -> tuple[str, str, int]:
  """The checked (id, question text, answer sentence index within its paragraph) of one qa."""
  qid = _get(qa, 'id', str, where, path)
  if not qid:
    raise DataError(f'{path}: {where}.id: empty question id')
  question = _get(qa, 'question', str, where, path)
  if not question.strip():
    raise DataError(f'{path}: {where}.question: empty question text (id {qid!r})')
  qa_answers = _get(qa, 'answers', list, where, path)
  if not qa_answers:
    raise DataError(f'{path}: {where}.answers: no answer (id {qid!r})')
  answer_start = _get(qa_answers[0], 'answer_start', int, f'{where}.answers[0]', path)
  sentence = _answer_sentence(answer_start, spans)
  if sentence is None:
    raise DataError(f'{path}: {where}: answer_start {answer_start} of question {qid!r} lies '
                    f'outside every sentence break ({len(spans)} sentences covering '
                    f'{spans[0][0]}..{spans[-1][1]})')
  return qid, question, sentence


def read_language(path: str | os.PathLike, lang: str) -> types.LanguageSplit:
  """Parses one SQuAD-R file into a LanguageSplit.

  Args:
    path: the JSON file.
    lang: its language code (stored in the result as is).

  Returns:
    The language's questions, candidate sentences, paragraphs and answer indices.

  Raises:
    DataError: the file is not JSON, lacks a field, has mismatched sentences and breaks, an empty
      question or sentence, an answer outside every sentence, or a repeated question id; the
      message names the file and the record.
  """
  path = pathlib.Path(path)
  root = _load_json(path)
  articles = _get(root, 'data', list, '<root>', path)
  query_ids, queries, answers = [], [], []
  candidates, contexts, paragraph_texts = [], [], []
  first_seen = {}
  for i, article in enumerate(articles):
    for j, paragraph in enumerate(_get(article, 'paragraphs', list, f'data[{i}]', path)):
      where = f'data[{i}].paragraphs[{j}]'
      context = _get(paragraph, 'context', str, where, path)
      spans = _sentence_breaks(paragraph, where, path)
      sentences = _sentences(paragraph, len(spans), where, path)
      qas = _get(paragraph, 'qas', list, where, path)
      offset = len(candidates)
      paragraph_index = len(paragraph_texts)
      paragraph_texts.append(context)
      candidates.extend(sentences)
      contexts.extend([paragraph_index] * len(sentences))
      for k, qa in enumerate(qas):
        qa_where = f'{where}.qas[{k}]'
        qid, question, sentence = _question(qa, spans, qa_where, path)
        if qid in first_seen:
          raise DataError(f'{path}: {qa_where}: question id {qid!r} appears twice (first at '
                          f'{first_seen[qid]})')
        first_seen[qid] = qa_where
        query_ids.append(qid)
        queries.append(question)
        answers.append(offset + sentence)
  return types.LanguageSplit(
      lang=lang,
      query_ids=tuple(query_ids),
      queries=tuple(queries),
      candidates=tuple(candidates),
      contexts=np.asarray(contexts, dtype=np.int32),
      paragraphs=tuple(paragraph_texts),
      answer=np.asarray(answers, dtype=np.int32),
  )


def _check_parallel(splits: dict[str, types.LanguageSplit],
                    files: dict[str, pathlib.Path]) -> None:
  """DataError naming the file and the id if some question id is absent from some language."""
  all_ids = dict.fromkeys(qid for split in splits.values() for qid in split.query_ids)
  for lang, split in splits.items():
    present = set(split.query_ids)
    missing = [qid for qid in all_ids if qid not in present]
    if missing:
      others = [other for other, s in splits.items()
                if other != lang and s.answer_of(missing[0]) is not None]
      raise DataError(
          f'{files[lang]}: question id {missing[0]!r} (present in {", ".join(others)}) is missing; '
          f'{len(missing)} id(s) missing in all; this benchmark must be parallel across languages')


def load_benchmark(name: str,
                   data_dir: str | os.PathLike | None,
                   langs: str | Iterable[str] | None = None) -> types.Benchmark:
  """Reads a benchmark's languages, downloading missing files (see paths.benchmark_file).

  Args:
    name: registry name, 'xquad_r' or 'mlqa_r'.
    data_dir: the data directory; None resolves it via paths.resolve_data_dir(None).
    langs: language codes to load (see sources.validate_langs); None loads all.

  Returns:
    The Benchmark, with languages in the given order.

  Raises:
    ValueError: unknown benchmark or language (the message names the allowed values).
    DataError: a malformed file, or for a parallel benchmark a question id absent from some
      loaded language (the message names the file and the id).
  """
  codes = sources.validate_langs(name, langs)
  root = paths.resolve_data_dir(data_dir)
  files = {lang: paths.benchmark_file(name, lang, root) for lang in codes}
  splits = {lang: read_language(files[lang], lang) for lang in codes}
  if sources.get(name).parallel:
    _check_parallel(splits, files)
  return types.Benchmark(name=name, langs=codes, splits=splits)
