"""Tests of hbt.data.pairs: PairSet from benchmarks and JSONL, and the held-out id split."""

import importlib.util
import json

import numpy as np
import pytest

from hbt.data import pairs as pairs_lib
from hbt.data.types import Benchmark, LanguageSplit

MLQA_COUNTS = {'ar': 517, 'de': 512, 'en': 1148, 'es': 500, 'hi': 507, 'vi': 511, 'zh': 504}


def _split(lang: str, qids: list[str]) -> LanguageSplit:
  """A LanguageSplit whose question i is answered by candidate i."""
  n = len(qids)
  return LanguageSplit(
      lang=lang, query_ids=tuple(qids), queries=tuple(f'{lang} query {q}' for q in qids),
      candidates=tuple(f'{lang} answer {q}' for q in qids), contexts=np.zeros(n, np.int32),
      paragraphs=('p',), answer=np.arange(n, dtype=np.int32)[::-1].copy())


def _benchmark() -> Benchmark:
  splits = {'en': _split('en', ['a', 'b', 'c']), 'de': _split('de', ['a', 'c'])}
  return Benchmark(name='toy', langs=('en', 'de'), splits=splits)


def _write(path, lines) -> str:
  path.write_text(''.join(
      (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + '\n'
      for line in lines), encoding='utf-8')
  return str(path)


def _row(qid='q1', lang='en', **kwargs) -> dict:
  row = {'id': qid, 'lang': lang, 'query': f'query {qid}', 'positive': f'pos {qid}'}
  row.update(kwargs)
  return row


def test_from_benchmark_pairs_query_with_answer_sentence():
  pairs = pairs_lib.PairSet.from_benchmark(_benchmark())
  assert pairs.langs == ('en', 'de')
  assert pairs.ids == {'en': ('a', 'b', 'c'), 'de': ('a', 'c')}
  assert len(pairs) == 5
  # Answers are reversed: question 0 ('a') is answered by candidate 2 ('c').
  assert pairs.query('en', 'a') == 'en query a'
  assert pairs.positive('en', 'a') == 'en answer c'
  assert pairs.positive('de', 'c') == 'de answer a'
  assert pairs.negatives('de', 'c') == ()
  assert pairs.all_ids() == ('a', 'b', 'c')
  assert pairs.langs_of('c') == ('en', 'de')


def test_from_benchmark_rejects_duplicate_id():
  bench = Benchmark(name='toy', langs=('en',), splits={'en': _split('en', ['a', 'a'])})
  with pytest.raises(ValueError, match="toy.*'en'.*twice"):
    pairs_lib.from_benchmark(bench)


def test_jsonl_round_trip(tmp_path):
  rows = [_row('q1', 'en', negatives=['neg 1', 'neg 2']), _row('q1', 'de', query='Wer? ÄÖÜ'),
          _row('q2', 'en', negatives=[]), _row('q3', 'zh', negatives=None)]
  path = _write(tmp_path / 'in.jsonl', [rows[0], '', rows[1], '   ', rows[2], rows[3]])
  pairs = pairs_lib.from_jsonl(path)
  assert pairs.langs == ('en', 'de', 'zh')
  assert pairs.ids == {'en': ('q1', 'q2'), 'de': ('q1',), 'zh': ('q3',)}
  assert pairs.negatives('en', 'q1') == ('neg 1', 'neg 2')
  assert pairs.negatives('en', 'q2') == ()
  assert pairs.query('de', 'q1') == 'Wer? ÄÖÜ'
  out = tmp_path / 'out.jsonl'
  pairs.to_jsonl(out)
  assert pairs_lib.PairSet.from_jsonl(out) == pairs
  assert pairs_lib.from_jsonl(out) == pairs_lib.from_jsonl(path)


def test_benchmark_round_trip_through_jsonl(tmp_path):
  pairs = pairs_lib.from_benchmark(_benchmark())
  pairs_lib.to_jsonl(pairs, tmp_path / 'b.jsonl')
  assert pairs_lib.from_jsonl(tmp_path / 'b.jsonl') == pairs


@pytest.mark.parametrize('line, message', [
    ('{"id": "q2", "lang": "en"', 'not valid JSON'),
    ('["q2", "en"]', 'expected a JSON object'),
    (json.dumps({'id': 'q2', 'lang': 'en', 'query': 'x'}), r"missing field.*'positive'"),
    (json.dumps(_row('q2', negative=['x'])), r"unknown field.*'negative'"),
    (json.dumps(_row(7)), "'id' must be a string"),
    (json.dumps(_row('q2', query=['x'])), "'query' must be a string"),
    (json.dumps(_row('q2', positive=None)), "'positive' must be a string"),
    (json.dumps(_row('q2', negatives='x')), "'negatives' must be a list"),
    (json.dumps(_row('q2', negatives=['x', 3])), r"'negatives\[1\]' must be a string"),
    (json.dumps(_row('q2', query='  ')), "'query' is empty"),
    (json.dumps(_row('q2', positive='')), "'positive' is empty"),
    (json.dumps(_row('')), "'id' is empty"),
    (json.dumps(_row('q2', negatives=[''])), r"'negatives\[0\]' is empty"),
    (json.dumps(_row('q2', 'xx')), "unknown language 'xx'"),
    (json.dumps(_row('q1', 'en')), r"id 'q1' appears twice in language 'en' \(first on line 1\)"),
])
def test_from_jsonl_bad_input_names_file_and_line(tmp_path, line, message):
  path = _write(tmp_path / 'bad.jsonl', [_row('q1', 'en'), _row('q1', 'de'), '', line])
  with pytest.raises(ValueError, match=f'bad.jsonl:4: .*{message}'):
    pairs_lib.from_jsonl(path)


def test_from_jsonl_allowed_langs(tmp_path):
  path = _write(tmp_path / 'p.jsonl', [_row('q1', 'en'), _row('q1', 'tlh')])
  with pytest.raises(ValueError, match="p.jsonl:2: unknown language 'tlh'"):
    pairs_lib.from_jsonl(path)
  assert pairs_lib.from_jsonl(path, allowed_langs={'en', 'tlh'}).langs == ('en', 'tlh')
  with pytest.raises(ValueError, match="p.jsonl:1: unknown language 'en'"):
    pairs_lib.from_jsonl(path, allowed_langs={'tlh'})


def test_from_jsonl_empty_file(tmp_path):
  path = _write(tmp_path / 'empty.jsonl', [''])
  with pytest.raises(ValueError, match='empty.jsonl: no pairs'):
    pairs_lib.from_jsonl(path)


def test_known_langs_cover_benchmarks():
  assert set('ar de el en es hi ru th tr vi zh'.split()) <= pairs_lib.KNOWN_LANGS


def _many_pairs() -> pairs_lib.PairSet:
  langs = ('en', 'de', 'fr')
  splits = {lang: _split(lang, [f'id{i}' for i in range(400) if i % (k + 1) == 0])
            for k, lang in enumerate(langs)}
  return pairs_lib.from_benchmark(Benchmark(name='many', langs=langs, splits=splits))


def test_split_ids_keeps_languages_of_an_id_together_and_is_deterministic():
  pairs = _many_pairs()
  train, val = pairs_lib.split_ids(pairs, 0.2, seed=3)
  train_ids, val_ids = set(train.all_ids()), set(val.all_ids())
  assert not train_ids & val_ids
  assert train_ids | val_ids == set(pairs.all_ids())
  assert len(train) + len(val) == len(pairs)
  assert 0.12 < len(val_ids) / len(pairs.all_ids()) < 0.28
  for qid in val_ids:
    assert val.langs_of(qid) == pairs.langs_of(qid)
    for lang in val.langs_of(qid):
      assert val.examples[(lang, qid)] == pairs.examples[(lang, qid)]
  for qid in train_ids:
    assert train.langs_of(qid) == pairs.langs_of(qid)
  again = pairs_lib.split_ids(pairs, 0.2, seed=3)
  assert again == (train, val)
  other = pairs_lib.split_ids(pairs, 0.2, seed=4)
  assert set(other[1].all_ids()) != val_ids
  # An id's side depends on (id, seed) only, not on the other ids.
  _, val_of_subset = pairs_lib.split_ids(pairs.subset({'id0', 'id1', 'id2', 'id3'}), 0.2, seed=3)
  assert set(val_of_subset.all_ids()) == val_ids & {'id0', 'id1', 'id2', 'id3'}


def test_split_ids_edges():
  pairs = _many_pairs()
  train, val = pairs_lib.split_ids(pairs, 0.0)
  assert train == pairs.subset(set(pairs.all_ids())) and len(val) == 0 and val.langs == ()
  train, val = pairs_lib.split_ids(pairs, 1.0)
  assert len(train) == 0 and len(val) == len(pairs)
  for bad in (-0.1, 1.5, True, '0.1'):
    with pytest.raises(ValueError, match='val_fraction'):
      pairs_lib.split_ids(pairs, bad)


def test_pairs_from_real_mlqa_r(data_dir):
  if importlib.util.find_spec('hbt.data.squad_r') is None:
    pytest.skip('hbt.data.squad_r not available yet')
  from hbt.data import squad_r  # pylint: disable=import-outside-toplevel
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('mlqa_r', data_dir))
  assert {lang: len(pairs.ids[lang]) for lang in pairs.langs} == MLQA_COUNTS
  assert len(pairs) == sum(MLQA_COUNTS.values())
  assert len(pairs.all_ids()) == 1148
  langs_per_id = [len(pairs.langs_of(qid)) for qid in pairs.all_ids()]
  assert min(langs_per_id) == 2 and max(langs_per_id) == 4
  assert all(pairs.query(lang, qid).strip() and pairs.positive(lang, qid).strip()
             for (lang, qid) in pairs.examples)


def test_groups_link_ids_sharing_a_positive_in_any_language(tmp_path):
  rows = [_row('a', 'en', positive='S1'), _row('b', 'en', positive='S1'),   # share in en
          _row('b', 'de', positive='T1'), _row('c', 'de', positive='T1'),   # b, c share in de
          _row('d', 'en', positive='S2'), _row('d', 'de', positive='T2'),
          _row('e', 'fr', positive='S2')]  # e's fr text equals d's en
  pairs = pairs_lib.from_jsonl(_write(tmp_path / 'p.jsonl', rows))
  assert dict(pairs.groups) == {'a': 0, 'b': 0, 'c': 0, 'd': 1, 'e': 1}
  assert pairs.text_group('T1') == 0 and pairs.text_group('S2') == 1
  assert pairs.text_group('not a positive') == -1
  # A validation split never separates a group.
  for seed in range(20):
    train, val = pairs_lib.split_ids(pairs, 0.5, seed)
    for side in (train, val):
      ids = set(side.all_ids())
      assert {'a', 'b', 'c'} <= ids or not {'a', 'b', 'c'} & ids
      assert {'d', 'e'} <= ids or not {'d', 'e'} & ids


def test_real_xquad_r_validation_shares_no_answer_sentence_with_training(data_dir):
  from hbt.data import squad_r  # pylint: disable=import-outside-toplevel
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('xquad_r', data_dir))
  english = [pairs.positive('en', q) for q in pairs.ids['en']]
  assert sum(english.count(s) > 1 for s in english) == 656  # ids sharing their answer sentence
  train, val = pairs_lib.split_ids(pairs, 0.05, seed=0)
  assert 40 <= len(val.all_ids()) <= 80
  seen = {train.positive(lang, q) for lang, q in train.examples}
  assert not [key for key in val.examples if val.positive(*key) in seen]
