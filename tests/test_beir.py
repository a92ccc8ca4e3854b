"""BEIR-layout benchmarks: the reader's errors, and nDCG@10, Recall@100 and mAP against pytrec_eval."""

import json

import jax
from jax.sharding import Mesh
import numpy as np
import pytest
import pytrec_eval

from hbt.eval import beir
from hbt.eval import metrics

NUM_DOCS, NUM_QUERIES, DIM = 300, 24, 16


def write_fixture(folder, rng) -> None:
  """A BEIR folder: graded qrels (1..3) with several relevant per query, judged non-relevant (0)
  entries, and queries without any relevant document (not evaluated)."""
  (folder / 'qrels').mkdir(parents=True)
  with open(folder / 'corpus.jsonl', 'w') as f:
    for i in range(NUM_DOCS):
      title = f'title {i}' if i % 3 else ''
      f.write(json.dumps({'_id': f'd{i}', 'title': title, 'text': f'text {i}'}) + '\n')
  with open(folder / 'queries.jsonl', 'w') as f:
    for i in range(NUM_QUERIES + 2):
      f.write(json.dumps({'_id': f'q{i}', 'text': f'question {i}'}) + '\n')
  lines = ['query-id\tcorpus-id\tscore']
  for q in range(NUM_QUERIES):
    count = 1 if q == 0 else (15 if q == 1 else int(rng.integers(1, 8)))
    docs = rng.choice(NUM_DOCS, count + 2, replace=False)
    for j, d in enumerate(docs):
      lines.append(f'q{q}\td{d}\t{0 if j >= count else int(rng.integers(1, 4))}')
  lines.append(f'q{NUM_QUERIES}\td0\t0')  # only judged non-relevant: not evaluated
  (folder / 'qrels' / 'test.tsv').write_text('\n'.join(lines) + '\n')


def pytrec(beir_set, scores: np.ndarray) -> dict:
  """pytrec_eval's per-query figures (whole corpus ranked) under our names."""
  run = {q: {d: float(s) for d, s in zip(beir_set.doc_ids, row)}
         for q, row in zip(beir_set.query_ids, scores)}
  measures = set(metrics.TREC_EVAL_GRADED_NAMES.values())
  result = pytrec_eval.RelevanceEvaluator(beir_set.qrels, measures).evaluate(run)
  return {ours: np.array([result[q][theirs] for q in beir_set.query_ids])
          for ours, theirs in metrics.TREC_EVAL_GRADED_NAMES.items()}


@pytest.mark.parametrize('devices', [1, 8])
def test_metrics_match_pytrec_eval(tmp_path, devices):
  rng = np.random.default_rng(0)
  write_fixture(tmp_path, rng)
  beir_set = beir.load(tmp_path, 'test')
  assert len(beir_set.query_ids) == NUM_QUERIES and beir_set.passages[1] == 'title 1 text 1'
  assert beir_set.passages[0] == 'text 0'
  relevant, gains = beir_set.relevant()
  assert relevant.shape[1] == 15 and set(np.unique(gains)) <= {0.0, 1.0, 2.0, 3.0}
  queries = rng.normal(size=(NUM_QUERIES, DIM)).astype(np.float32)
  corpus = rng.normal(size=(NUM_DOCS, DIM)).astype(np.float32)
  # Relevant documents near their queries, so nDCG@10 and recall are not all zero.
  for q in range(NUM_QUERIES):
    for d in relevant[q][relevant[q] >= 0][::2]:
      corpus[d] = queries[q] + 0.5 * corpus[d]
  mesh = Mesh(np.asarray(jax.devices()[:devices]), ('data',))
  results = beir.score(beir_set, queries, corpus, mesh=mesh, chunk_size=8)
  want = pytrec(beir_set, queries.astype(np.float64) @ corpus.astype(np.float64).T)
  for name in metrics.GRADED_METRIC_NAMES:
    np.testing.assert_allclose(results['per_query'][name], want[name], atol=1e-6, err_msg=name)
    assert results['summary'][name] == pytest.approx(want[name].mean(), abs=1e-6)
  assert 0 < results['summary']['ndcg@10'] < 1 and 0 < results['summary']['recall@100'] < 1


def test_graded_ndcg_differs_from_binary():
  """Graded gains count: swapping a grade-3 and a grade-1 document changes nDCG@10."""
  ranks = np.array([[1, 2], [2, 1]], np.int32)
  gains = np.array([[3.0, 1.0], [3.0, 1.0]], np.float32)
  out = metrics.graded_metrics_from_ranks(ranks, gains, np.ones((2, 2), bool))
  assert out['ndcg@10'][0] == pytest.approx(1.0)
  ideal = 3 + 1 / np.log2(3)
  assert out['ndcg@10'][1] == pytest.approx((3 / np.log2(3) + 1) / ideal, abs=1e-6)
  np.testing.assert_allclose(out['map'], [1.0, 1.0])


@pytest.mark.parametrize('name, content, message', [
    ('corpus.jsonl', '{"_id": "d0", "text": "a"}\n{"_id": "d1"}\n', 'corpus.jsonl:2: field'),
    ('corpus.jsonl', '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n', 'twice'),
    ('queries.jsonl', '{"_id": "q0", "text": "a"}\nnot json\n', 'queries.jsonl:2: not valid'),
    ('qrels/test.tsv', 'qid\tdid\tscore\nq0\td0\t1\n', 'test.tsv:1: expected the header'),
    ('qrels/test.tsv', 'query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\td9\t1\n',
     "test.tsv:3: document 'd9'"),
    ('qrels/test.tsv', 'query-id\tcorpus-id\tscore\nq0\td0\thigh\n', 'test.tsv:2: score'),
    ('qrels/test.tsv', 'query-id\tcorpus-id\tscore\nq0\td0\t0\n', 'no query'),
])
def test_reader_errors_name_file_and_line(tmp_path, name, content, message):
  (tmp_path / 'qrels').mkdir()
  (tmp_path / 'corpus.jsonl').write_text('{"_id": "d0", "text": "a"}\n')
  (tmp_path / 'queries.jsonl').write_text('{"_id": "q0", "text": "a"}\n')
  (tmp_path / 'qrels' / 'test.tsv').write_text('query-id\tcorpus-id\tscore\nq0\td0\t1\n')
  (tmp_path / name).write_text(content)
  with pytest.raises(ValueError, match=message):
    beir.load(tmp_path, 'test')


def test_missing_split_names_the_file(tmp_path):
  (tmp_path / 'corpus.jsonl').write_text('')
  (tmp_path / 'queries.jsonl').write_text('')
  with pytest.raises(FileNotFoundError, match='qrels/dev.tsv'):
    beir.load(tmp_path, 'dev')


def beir_config(folder, checkpoint, mode='eval'):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.mode = mode
  config.model.source, config.model.checkpoint = 'hf', str(checkpoint)
  config.model.dtype = 'float32'
  config.eval.benchmark, config.eval.progress = f'beir:{folder}', False
  return config


def test_config_validates_beir_benchmark(tmp_path):
  from hbt import config_lib  # pylint: disable=g-import-not-at-top
  write_fixture(tmp_path, np.random.default_rng(0))
  config_lib.validate(beir_config(tmp_path, tmp_path))
  with pytest.raises(config_lib.ConfigError, match="config.eval.benchmark 'beir:<folder>' is "):
    config_lib.validate(beir_config(tmp_path, tmp_path, mode='all'))
  config = beir_config(tmp_path, tmp_path)
  config.eval.beir_split = 'dev'
  with pytest.raises(config_lib.ConfigError, match='config.eval.benchmark names a folder without'):
    config_lib.validate(config)


def test_eval_job_on_a_beir_folder(tiny_checkpoint, tmp_path):
  """config.mode='eval' with config.eval.benchmark='beir:<folder>': the figures and their files."""
  from hbt.eval import report  # pylint: disable=g-import-not-at-top
  from hbt.train import loop  # pylint: disable=g-import-not-at-top
  write_fixture(tmp_path / 'set', np.random.default_rng(0))
  results = loop.run(beir_config(tmp_path / 'set', tiny_checkpoint), tmp_path / 'work')['zero_shot']
  assert results['benchmark'] == 'set_test'
  assert set(results['summary']) == set(metrics.GRADED_METRIC_NAMES)
  assert all(0 <= v <= 1 for v in results['summary'].values())
  saved = json.loads((tmp_path / 'work' / 'eval' / 'set_test.json').read_text())
  assert saved['summary'] == pytest.approx(results['summary'])
  with np.load(tmp_path / 'work' / 'eval' / 'set_test_per_query.npz') as per_query:
    assert len(per_query['map']) == len(per_query['qids']) == NUM_QUERIES
    assert per_query['map'].mean() == pytest.approx(results['summary']['map'])
  assert 'ndcg@10' in report.table(results['summary'])
