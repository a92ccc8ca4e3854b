"""Tests of hbt.data: benchmark registry, data directory and download, SQuAD-R readers, TFDS."""

import copy
import hashlib
import io
import json
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np
import pytest

from hbt.data import paths
from hbt.data import sources
from hbt.data import squad_r

XQUAD_CANDIDATES = {'ar': 1222, 'de': 1276, 'el': 1234, 'en': 1180, 'es': 1215, 'hi': 1244,
                    'ru': 1219, 'th': 852, 'tr': 1167, 'vi': 1209, 'zh': 1196}
MLQA_QUESTIONS = {'ar': 517, 'de': 512, 'en': 1148, 'es': 500, 'hi': 507, 'vi': 511, 'zh': 504}
MLQA_CANDIDATES = {'ar': 2545, 'de': 2362, 'en': 6264, 'es': 1787, 'hi': 2426, 'vi': 2828,
                   'zh': 2322}


# --- tiny SQuAD-R files -------------------------------------------------------------------------


def _paragraph(sentences: list[str], qas: list[tuple[str, str, str]]) -> dict:
  """A SQuAD-R paragraph of space-joined sentences; qas are (id, question, answer text)."""
  context = ' '.join(sentences)
  breaks, start = [], 0
  for sentence in sentences:
    breaks.append([start, start + len(sentence)])
    start += len(sentence) + 1
  return {
      'context': context,
      'sentences': list(sentences),
      'sentence_breaks': breaks,
      'qas': [{'id': qid, 'question': question,
               'answers': [{'answer_start': context.index(text), 'text': text}]}
              for qid, question, text in qas],
  }


def _tiny() -> dict:
  """A valid two-article SQuAD-R document: 5 sentences in 3 paragraphs, 4 questions."""
  return {'version': '1.1', 'data': [
      {'title': 'A', 'paragraphs': [
          _paragraph(['Alpha one.', 'Beta two.', 'Gamma three.'],
                     [('q1', 'Which beta?', 'two'), ('q2', 'Which alpha?', 'one')]),
          _paragraph(['Delta four.'], [('q3', 'Which delta?', 'four')]),
      ]},
      {'title': 'B', 'paragraphs': [
          _paragraph(['Epsilon five.'], [('q4', 'Which epsilon?', 'five')]),
      ]},
  ]}


def _write(folder: pathlib.Path, doc: dict | str, name: str = 'en.json') -> pathlib.Path:
  """Writes `doc` (JSON-encoded unless already a string) to folder/name."""
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / name
  path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding='utf-8')
  return path


class _FakeResponse(io.BytesIO):
  """What urlopen returns: a readable context manager."""


def _fake_urlopen(payload: bytes, calls: list):
  """An urlopen stand-in that records (url, timeout) and returns `payload`."""
  def urlopen(url, timeout=None):
    calls.append((url, timeout))
    return _FakeResponse(payload)
  return urlopen


def _offline_urlopen(url, timeout=None):
  """An urlopen stand-in for a machine without network."""
  raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')


# --- readers on the real data -------------------------------------------------------------------


@pytest.fixture(scope='module')
def xquad(data_dir):
  """All of XQuAD-R, read once."""
  return squad_r.load_benchmark('xquad_r', data_dir)


@pytest.fixture(scope='module')
def mlqa(data_dir):
  """All of MLQA-R, read once."""
  return squad_r.load_benchmark('mlqa_r', data_dir)


def test_xquad_counts(xquad):
  assert xquad.langs == sources.XQUAD_R.langs
  for lang in xquad.langs:
    split = xquad[lang]
    assert split.lang == lang
    assert len(split.query_ids) == len(split.queries) == len(split.answer) == 1190
    assert len(split.candidates) == len(split.contexts) == XQUAD_CANDIDATES[lang], lang
    assert split.answer.dtype == np.int32 and split.contexts.dtype == np.int32
    assert len(split.paragraphs) == 240
  assert sum(len(xquad[lang].candidates) for lang in xquad.langs) == 13014


def test_mlqa_counts(mlqa):
  assert mlqa.langs == sources.MLQA_R.langs
  for lang in mlqa.langs:
    assert len(mlqa[lang].queries) == MLQA_QUESTIONS[lang], lang
    assert len(mlqa[lang].candidates) == MLQA_CANDIDATES[lang], lang


def test_xquad_relevance(xquad, data_dir):
  en = xquad['en']
  first = en.answer_of('56beb4343aeaaa14008c925b')
  assert en.candidates[first].startswith('The Panthers defense gave up just 308 points')
  assert en.paragraphs[en.contexts[first]].startswith(en.candidates[first])
  doc = json.loads((data_dir / 'xquad-r' / 'en.json').read_text(encoding='utf-8'))
  texts = {qa['id']: qa['answers'][0]['text']
           for article in doc['data'] for p in article['paragraphs'] for qa in p['qas']}
  contained = [texts[qid] in en.candidates[en.answer[i]] for i, qid in enumerate(en.query_ids)]
  # Three English answers run across a sentence break ('E.I. du Pont', 'The T. T. Tsui Gallery').
  assert sum(contained) == len(contained) - 3
  for lang in xquad.langs:  # Same paragraph order in every language.
    split = xquad[lang]
    assert split.query_ids == en.query_ids, lang
    np.testing.assert_array_equal(split.contexts[split.answer], en.contexts[en.answer])


def test_mlqa_ids_shared_through_english(mlqa):
  english = set(mlqa['en'].query_ids)
  for lang in mlqa.langs:
    assert set(mlqa[lang].query_ids) <= english, lang
  assert mlqa['de'].answer_of('no-such-id') is None


def test_load_subset_in_given_order(data_dir):
  bench = squad_r.load_benchmark('xquad_r', data_dir, langs=['zh', 'en'])
  assert bench.name == 'xquad_r'
  assert bench.langs == ('zh', 'en')
  assert set(bench.splits) == {'zh', 'en'}


# --- registry -----------------------------------------------------------------------------------


def test_registry_checksums_match_shared_sums(data_dir):
  listed = {}
  for line in (data_dir / 'SHA256SUMS').read_text().splitlines():
    digest, name = line.split()
    listed[name] = digest
  for source in sources.SOURCES.values():
    assert set(source.sha256) == set(source.langs)
    for lang in source.langs:
      assert listed[source.relative_path(lang)] == source.sha256[lang]


def test_local_files_have_pinned_checksums(data_dir):
  for source in sources.SOURCES.values():
    for lang in source.langs:
      digest = hashlib.sha256((data_dir / source.relative_path(lang)).read_bytes()).hexdigest()
      assert digest == source.sha256[lang], source.relative_path(lang)


def test_urls():
  assert sources.XQUAD_R.url('en') == (
      'https://raw.githubusercontent.com/google-research-datasets/lareqa/'
      '9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r/en.json')
  assert sources.MLQA_R.url('de') == (
      'https://raw.githubusercontent.com/google-research-datasets/lareqa/'
      '354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/de.json')
  assert sources.XQUAD_R.commit.startswith('9bc8c7f')
  assert sources.MLQA_R.commit.startswith('354d67d')


def test_validate_langs():
  assert sources.validate_langs('mlqa_r', None) == sources.MLQA_R.langs
  assert sources.validate_langs('mlqa_r', 'de, en') == ('de', 'en')
  assert sources.validate_langs('xquad_r', ['th']) == ('th',)
  assert sources.split_langs(' de,en ,') == ('de', 'en', '')
  with pytest.raises(ValueError, match=r"config\.eval\.langs.*''"):  # an empty entry is refused
    sources.validate_langs('mlqa_r', 'de,,en', field='config.eval.langs')
  with pytest.raises(ValueError, match=r"config\.eval\.langs.*'el'.*ar, de, en, es, hi, vi, zh"):
    sources.validate_langs('mlqa_r', ['en', 'el'], field='config.eval.langs')
  with pytest.raises(ValueError, match=r"config\.eval\.langs.*'en' given twice"):
    sources.validate_langs('mlqa_r', ['en', 'en'], field='config.eval.langs')
  with pytest.raises(ValueError, match=r'langs: empty'):
    sources.validate_langs('mlqa_r', [])
  with pytest.raises(ValueError, match=r"unknown benchmark 'squad'.*xquad_r, mlqa_r"):
    sources.validate_langs('squad', None)


def test_load_benchmark_unknown_language(data_dir):
  with pytest.raises(ValueError, match=r"'xx'.*allowed: ar, de, el, en, es, hi, ru, th, tr, vi"):
    squad_r.load_benchmark('xquad_r', data_dir, langs=['en', 'xx'])


# --- bad input ----------------------------------------------------------------------------------


def _drop(where, key):
  """Mutation deleting doc<where>[key]; `where` maps a document to the record."""
  def mutate(doc):
    del where(doc)[key]
  return mutate


def _set(where, key, value):
  """Mutation setting doc<where>[key] = value."""
  def mutate(doc):
    where(doc)[key] = value
  return mutate


def _para(i, j):
  """Selector of data[i].paragraphs[j]."""
  return lambda doc: doc['data'][i]['paragraphs'][j]


def _qa(i, j, k):
  """Selector of data[i].paragraphs[j].qas[k]."""
  return lambda doc: doc['data'][i]['paragraphs'][j]['qas'][k]


def _duplicate_id(doc):
  """Gives q4 the id of q2."""
  doc['data'][1]['paragraphs'][0]['qas'][0]['id'] = 'q2'


def _mismatch(doc):
  """Drops the last sentence text of data[0].paragraphs[0] but not its break."""
  doc['data'][0]['paragraphs'][0]['sentences'].pop()


def _empty_sentence(doc):
  """Blanks data[0].paragraphs[0].sentences[1]."""
  doc['data'][0]['paragraphs'][0]['sentences'][1] = '  '


def _answer(offset):
  """Mutation moving q2's answer_start to `offset`."""
  def mutate(doc):
    doc['data'][0]['paragraphs'][0]['qas'][1]['answers'][0]['answer_start'] = offset
  return mutate


BAD_INPUTS = {
    'no data': (_drop(lambda d: d, 'data'), r"<root>: missing field 'data'"),
    'no paragraphs': (_drop(lambda d: d['data'][1], 'paragraphs'),
                      r"data\[1\]: missing field 'paragraphs'"),
    'no context': (_drop(_para(0, 1), 'context'),
                   r"data\[0\]\.paragraphs\[1\]: missing field 'context'"),
    'no sentences': (_drop(_para(0, 1), 'sentences'),
                     r"data\[0\]\.paragraphs\[1\]: missing field 'sentences'"),
    'no sentence_breaks': (_drop(_para(1, 0), 'sentence_breaks'),
                           r"data\[1\]\.paragraphs\[0\]: missing field 'sentence_breaks'"),
    'no qas': (_drop(_para(0, 0), 'qas'), r"data\[0\]\.paragraphs\[0\]: missing field 'qas'"),
    'no id': (_drop(_qa(0, 0, 1), 'id'),
              r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing field 'id'"),
    'no question': (_drop(_qa(0, 1, 0), 'question'),
                    r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: missing field 'question'"),
    'no answers': (_drop(_qa(1, 0, 0), 'answers'),
                   r"data\[1\]\.paragraphs\[0\]\.qas\[0\]: missing field 'answers'"),
    'no answer_start': (lambda d: d['data'][0]['paragraphs'][0]['qas'][0]['answers'][0].clear(),
                        r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]: missing field "
                        r"'answer_start'"),
    'string offset': (lambda d: d['data'][0]['paragraphs'][0]['qas'][0]['answers'][0].update(
        answer_start='16'), r'qas\[0\]\.answers\[0\]\.answer_start: expected int, got str'),
    'bad break': (lambda d: d['data'][0]['paragraphs'][1]['sentence_breaks'].__setitem__(0, [0]),
                  r'data\[0\]\.paragraphs\[1\]\.sentence_breaks\[0\]: expected \[start, end\]'),
    'length mismatch': (_mismatch, r'data\[0\]\.paragraphs\[0\]: 2 sentences but 3 '
                                   r'sentence_breaks'),
    'empty sentence': (_empty_sentence, r'data\[0\]\.paragraphs\[0\]\.sentences\[1\]: empty '
                                        r'sentence'),
    'empty question': (_set(_qa(0, 0, 1), 'question', ' '),
                       r"data\[0\]\.paragraphs\[0\]\.qas\[1\]\.question: empty question text "
                       r"\(id 'q2'\)"),
    'no answer': (_set(_qa(0, 0, 1), 'answers', []), r"qas\[1\]\.answers: no answer \(id 'q2'\)"),
    'answer between sentences': (_answer(10), r"qas\[1\]: answer_start 10 of question 'q2' lies "
                                              r'outside every sentence'),
    'answer past the end': (_answer(1000), r"answer_start 1000 of question 'q2' lies outside"),
    'duplicate id': (_duplicate_id,
                     r"data\[1\]\.paragraphs\[0\]\.qas\[0\]: question id 'q2' appears twice "
                     r'\(first at data\[0\]\.paragraphs\[0\]\.qas\[1\]\)'),
}


def test_tiny_file_is_valid(tmp_path):
  split = squad_r.read_language(_write(tmp_path, _tiny()), 'en')
  assert split.query_ids == ('q1', 'q2', 'q3', 'q4')
  assert split.candidates == ('Alpha one.', 'Beta two.', 'Gamma three.', 'Delta four.',
                              'Epsilon five.')
  np.testing.assert_array_equal(split.contexts, [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(split.answer, [1, 0, 3, 4])
  assert split.paragraphs[2] == 'Epsilon five.'
  assert split.answer_of('q3') == 3


def test_answer_at_sentence_start_and_last_char(tmp_path):
  doc = _tiny()
  doc['data'][0]['paragraphs'][0]['qas'][1]['answers'][0]['answer_start'] = 11  # 'Beta'
  assert squad_r.read_language(_write(tmp_path, doc), 'en').answer[1] == 1
  doc['data'][0]['paragraphs'][0]['qas'][1]['answers'][0]['answer_start'] = 32  # last '.'
  assert squad_r.read_language(_write(tmp_path, doc), 'en').answer[1] == 2


def test_duplicate_sentences_are_kept(tmp_path):
  doc = _tiny()
  doc['data'][1]['paragraphs'][0] = _paragraph(['Alpha one.'], [('q4', 'Again?', 'one')])
  split = squad_r.read_language(_write(tmp_path, doc), 'en')
  assert split.candidates.count('Alpha one.') == 2
  assert split.answer_of('q4') == 4


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input(tmp_path, case):
  mutate, pattern = BAD_INPUTS[case]
  doc = copy.deepcopy(_tiny())
  mutate(doc)
  path = _write(tmp_path, doc)
  with pytest.raises(squad_r.DataError, match=pattern) as info:
    squad_r.read_language(path, 'en')
  assert str(path) in str(info.value)


def test_not_json(tmp_path):
  path = _write(tmp_path, '{"data": [\n  {"paragraphs": [}\n]}')
  with pytest.raises(squad_r.DataError, match=r'not valid JSON: .* at line 2, column 19') as info:
    squad_r.read_language(path, 'en')
  assert str(path) in str(info.value)


def test_not_an_object(tmp_path):
  path = _write(tmp_path, '[1, 2]')
  with pytest.raises(squad_r.DataError, match=r'<root>: expected an object, got list'):
    squad_r.read_language(path, 'en')


def test_parallel_benchmark_needs_every_id(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  folder = tmp_path / 'xquad-r'
  _write(folder, _tiny(), 'en.json')
  partial = _tiny()
  del partial['data'][0]['paragraphs'][1]['qas'][0]  # q3
  de = _write(folder, partial, 'de.json')
  pattern = r"question id 'q3' \(present in en\) is missing"
  with pytest.raises(squad_r.DataError, match=pattern) as info:
    squad_r.load_benchmark('xquad_r', tmp_path, langs=['en', 'de'])
  assert str(de) in str(info.value)


def test_non_parallel_benchmark_allows_partial_ids(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  folder = tmp_path / 'mlqa-r'
  _write(folder, _tiny(), 'en.json')
  partial = _tiny()
  del partial['data'][1]
  _write(folder, partial, 'de.json')
  bench = squad_r.load_benchmark('mlqa_r', tmp_path, langs='en,de')
  assert bench['de'].answer_of('q4') is None
  assert bench['en'].answer_of('q4') == 4


# --- data directory and download ----------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.delenv('HBT_DATA_DIR', raising=False)
  monkeypatch.delenv('HBT_CACHE_DIR', raising=False)
  assert paths.resolve_data_dir(None) == tmp_path / 'home' / '.cache' / 'hbt' / 'data'
  monkeypatch.setenv('HBT_CACHE_DIR', str(tmp_path / 'cache'))
  assert paths.resolve_data_dir(None) == tmp_path / 'cache' / 'data'
  monkeypatch.setenv('HBT_DATA_DIR', str(tmp_path / 'env'))
  assert paths.resolve_data_dir(None) == tmp_path / 'env'
  assert paths.resolve_data_dir('') == tmp_path / 'env'
  assert paths.resolve_data_dir(str(tmp_path / 'configured')) == tmp_path / 'configured'
  assert paths.resolve_data_dir(tmp_path / 'configured') == tmp_path / 'configured'


def test_existing_file_used_as_is(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  path = _write(tmp_path / 'mlqa-r', 'not even JSON', 'vi.json')
  assert paths.benchmark_file('mlqa_r', 'vi', tmp_path) == path


def test_benchmark_file_rejects_unknown_language(tmp_path):
  with pytest.raises(ValueError, match=r"lang: unknown language 'th' for mlqa_r"):
    paths.benchmark_file('mlqa_r', 'th', tmp_path)


def test_offline_missing_file(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  with pytest.raises(FileNotFoundError) as info:
    paths.benchmark_file('xquad_r', 'el', tmp_path)
  message = str(info.value)
  assert isinstance(info.value, paths.DataFileNotFoundError)
  assert str(tmp_path / 'xquad-r' / 'el.json') in message
  assert sources.XQUAD_R.url('el') in message
  assert '--config.data.dir' in message and 'HBT_DATA_DIR' in message
  assert 'xquad-r/' in message and 'mlqa-r/' in message
  assert not any(tmp_path.rglob('*'))


def test_offline_load_benchmark(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  with pytest.raises(FileNotFoundError, match=r'mlqa-r/ar\.json does not exist'):
    squad_r.load_benchmark('mlqa_r', tmp_path)


def test_checksum_mismatch_leaves_no_file(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(urllib.request, 'urlopen', _fake_urlopen(b'{"data": []}', calls))
  with pytest.raises(paths.ChecksumError) as info:
    paths.benchmark_file('xquad_r', 'en', tmp_path)
  message = str(info.value)
  assert str(tmp_path / 'xquad-r' / 'en.json') in message
  assert sources.XQUAD_R.sha256['en'] in message
  assert hashlib.sha256(b'{"data": []}').hexdigest() in message
  assert calls == [(sources.XQUAD_R.url('en'), paths.DOWNLOAD_TIMEOUT_S)]
  assert not [p for p in tmp_path.rglob('*') if p.is_file()]


def test_download_lands_atomically(tmp_path, monkeypatch, data_dir):
  payload = (data_dir / 'xquad-r' / 'en.json').read_bytes()
  calls, replaced = [], []
  real_replace = os.replace
  def spy_replace(src, dst):
    replaced.append((pathlib.Path(src), pathlib.Path(dst)))
    assert not pathlib.Path(dst).exists()
    real_replace(src, dst)
  monkeypatch.setattr(urllib.request, 'urlopen', _fake_urlopen(payload, calls))
  monkeypatch.setattr(os, 'replace', spy_replace)
  target = tmp_path / 'data' / 'xquad-r' / 'en.json'
  assert paths.benchmark_file('xquad_r', 'en', tmp_path / 'data') == target
  assert target.read_bytes() == payload
  assert calls == [(sources.XQUAD_R.url('en'), paths.DOWNLOAD_TIMEOUT_S)]
  [(src, dst)] = replaced
  assert dst == target and src.parent == target.parent and src != target
  assert sorted(target.parent.iterdir()) == [target]  # No temporary file left.
  # A second call uses the local file without downloading.
  assert paths.benchmark_file('xquad_r', 'en', tmp_path / 'data') == target
  assert len(calls) == 1
  assert len(squad_r.load_benchmark('xquad_r', tmp_path / 'data', ['en'])['en'].queries) == 1190


# --- TFDS ---------------------------------------------------------------------------------------


def test_tfds_builder_offline(tmp_path, monkeypatch, data_dir):
  tfds = pytest.importorskip('tensorflow_datasets')
  from hbt.data import tfds_builders  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(urllib.request, 'urlopen', _offline_urlopen)
  builder = tfds.builder('xquad_r/en', source_dir=data_dir, data_dir=tmp_path / 'tfds')
  assert isinstance(builder, tfds_builders.XquadR)
  builder.download_and_prepare()
  assert builder.info.splits['queries'].num_examples == 1190
  assert builder.info.splits['candidates'].num_examples == 1180
  queries = list(tfds.as_numpy(builder.as_dataset(split='queries')))
  candidates = list(tfds.as_numpy(builder.as_dataset(split='candidates')))
  assert len(queries) == 1190 and len(candidates) == 1180
  sentences = {int(c['index']): c['sentence'] for c in candidates}
  assert sorted(sentences) == list(range(1180))
  for query in queries:
    assert sentences[int(query['answer_index'])] == query['answer_sentence']
  first = next(q for q in queries if q['id'] == b'56beb4343aeaaa14008c925b')
  assert first['answer_sentence'].startswith(b'The Panthers defense gave up just 308 points')
  assert {config.name for config in tfds_builders.MlqaR.BUILDER_CONFIGS} == set(
      sources.MLQA_R.langs)
