"""The in-memory form of a parallel retrieval benchmark (XQuAD-R, MLQA-R).

A benchmark holds, for every language, its questions and its candidate answer sentences. Questions
are parallel across languages through a shared id: the relevant candidates of question `qid` are the
answer sentences of `qid` in every language that has it.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LanguageSplit:
  """One language of a benchmark.

  Attributes:
    lang: ISO 639-1 code, e.g. 'en'.
    query_ids: question ids, parallel across languages.
    queries: question texts, aligned with query_ids.
    candidates: candidate sentences (every sentence of every paragraph, in file order).
    contexts: for each candidate, the index of its paragraph in `paragraphs`.
    paragraphs: paragraph texts.
    answer: for each query, the index in `candidates` of its answer sentence.
  """

  lang: str
  query_ids: tuple[str, ...]
  queries: tuple[str, ...]
  candidates: tuple[str, ...]
  contexts: np.ndarray  # int32 [num_candidates]
  paragraphs: tuple[str, ...]
  answer: np.ndarray  # int32 [num_queries]

  def answer_of(self, qid: str) -> int | None:
    """Index of qid's answer sentence in this language, or None if the language lacks qid."""
    index = self._index.get(qid)
    return None if index is None else int(self.answer[index])

  @property
  def _index(self) -> dict[str, int]:
    cached = self.__dict__.get('_index_cache')
    if cached is None:
      cached = {q: i for i, q in enumerate(self.query_ids)}
      object.__setattr__(self, '_index_cache', cached)
    return cached


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A parallel retrieval benchmark: one LanguageSplit per language, in `langs` order."""

  name: str
  langs: tuple[str, ...]
  splits: dict[str, LanguageSplit]

  def __getitem__(self, lang: str) -> LanguageSplit:
    return self.splits[lang]
