"""Sentence overlap between training pairs and an evaluation benchmark."""

import json

import numpy as np

from hbt.data import overlap
from hbt.data import pairs as pairs_lib
from hbt.data import squad_r
from hbt.data.types import Benchmark, LanguageSplit


def _benchmark() -> Benchmark:
  def split(lang, queries, candidates):
    return LanguageSplit(lang=lang, query_ids=tuple(f'q{i}' for i in range(len(queries))),
                         queries=tuple(queries), candidates=tuple(candidates),
                         contexts=np.zeros(len(candidates), np.int32), paragraphs=('p',),
                         answer=np.zeros(len(queries), np.int32))
  return Benchmark('toy', ('en', 'de', 'fr'), {
      'en': split('en', ['Who?', 'When?'], ['A did it.', 'In 1900.', 'Other.']),
      'de': split('de', ['Wer?'], ['A tat es.', 'Sonst.']),
      'fr': split('fr', ['Qui?'], ['A l’a fait.'])})


def test_counts_exact_sentences_per_language(tmp_path):
  rows = [{'id': 'a', 'lang': 'en', 'query': 'Who?', 'positive': ' A did it. '},  # both shared
          {'id': 'b', 'lang': 'en', 'query': 'Why?', 'positive': 'In 1900'},      # no full stop
          {'id': 'a', 'lang': 'de', 'query': 'Wieso?', 'positive': 'Sonst.'},     # a candidate
          {'id': 'a', 'lang': 'es', 'query': 'Who?', 'positive': 'Other.'}]       # other language
  path = tmp_path / 'p.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  got = overlap.sentence_overlap(pairs_lib.from_jsonl(path), _benchmark())
  assert got['langs']['en'] == {'train': 4, 'eval': 5, 'shared': 2, 'shared_queries': 1,
                                'shared_candidates': 1}
  assert got['langs']['de'] == {'train': 2, 'eval': 3, 'shared': 1, 'shared_queries': 0,
                                'shared_candidates': 1}
  assert got['langs']['fr']['train'] == 0 and got['langs']['fr']['shared'] == 0
  assert got['total']['shared'] == 3 and 'es' not in got['langs']


def test_default_job_trains_on_no_evaluation_sentence(data_dir):
  mlqa = pairs_lib.from_benchmark(squad_r.load_benchmark('mlqa_r', data_dir))
  xquad = squad_r.load_benchmark('xquad_r', data_dir)
  got = overlap.sentence_overlap(mlqa, xquad)
  assert got['total']['train'] > 7000 and got['total']['eval'] > 25000
  assert got['total']['shared'] == 0  # measured: MLQA-R and XQuAD-R share no sentence
  # The check does find overlap where there is some: XQuAD-R against itself.
  itself = overlap.sentence_overlap(pairs_lib.from_benchmark(xquad), xquad)
  assert itself['total']['shared'] == itself['total']['train']
