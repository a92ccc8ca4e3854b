"""The real training loop in process on a tiny model (as flax examples/wmt/train_test.py does).

A 2-layer random XLM-R-like checkpoint (the tiny_checkpoint fixture of conftest), a few steps of 8 pairs on the real data, evaluators on a
2-language subset: the per-run files (metrics.jsonl, eval/*.json, summary.json, TensorBoard,
checkpoints) and their contents.
"""

import collections
import copy
import hashlib
import json
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from hbt import config_lib
from hbt import io
from hbt.batches import input_pipeline
from hbt.data import pairs as pairs_lib
from hbt.data import squad_r
from hbt.eval import evaluators
from hbt.eval import report as eval_report
from hbt.train import checkpoint
from hbt.train import loop
from hbt.train import step as step_lib
from tests import runs


def set_fields(config, overrides: dict):
  """Sets each dotted field of `overrides` on config; returns it."""
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def tiny_config(checkpoint_dir, data_dir, steps: int, **extra):
  return set_fields(default.get_config(),
                    {**runs.tiny_overrides(checkpoint_dir, data_dir, steps), **extra})


def read_metrics(workdir) -> list[dict]:
  return [record for _, record in io.read_jsonl(workdir / 'metrics.jsonl')]


def values(records, name) -> dict[int, float]:
  return {r['step']: r[name] for r in records if name in r}


def test_jsonl_writer_reopened_at_a_step_drops_the_later_lines(tmp_path):
  writer = loop.JsonlWriter(tmp_path / 'metrics.jsonl')
  for step in (1, 2, 3):
    writer.write_scalars(step, {'loss': 1.0 / 3 + step})
  before = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  reopened = loop.JsonlWriter(tmp_path / 'metrics.jsonl', resume_step=2)
  reopened.write_scalars(3, {'loss': 0.5})
  assert (tmp_path / 'metrics.jsonl').read_text().splitlines() == before[:2] + [
      '{"loss": 0.5, "step": 3}']
  assert read_metrics(tmp_path) == [{'loss': 1.0 / 3 + 1, 'step': 1},
                                    {'loss': 1.0 / 3 + 2, 'step': 2}, {'loss': 0.5, 'step': 3}]


def test_train_and_evaluate(tiny_checkpoint, data_dir, tmp_path):
  # A second benchmark evaluator, as README's "Evaluators" adds one in a config file.
  config = tiny_config(tiny_checkpoint, data_dir, 4, **{
      'evals.zero_shot.every': 3, 'evals.mlqa_r': {'type': 'mlqa_r', 'every': 0, 'langs': 'de,es'}})
  config_lib.validate(config)
  train_pairs, _ = loop.training_pairs(config)
  results = loop.run(config, str(tmp_path))  # a str workdir, through epath

  records = read_metrics(tmp_path)
  assert sorted(values(records, 'train/loss')) == [2, 4]
  assert all(np.isfinite(v) for v in values(records, 'train/loss').values())
  assert set(values(records, 'train/l2_grads')) == {2, 4}
  # The other training metrics of README's metrics.jsonl row. Accuracy: the mean over 2 steps of
  # the in-batch top-1 accuracy of 8 queries, so a multiple of 1/16. The learning rate of the
  # step's last update (count step - 1): linear warmup over 2 steps to 1e-3, linear decay to 0 at 4.
  for step, accuracy in values(records, 'train/accuracy').items():
    assert 0 <= accuracy <= 1 and accuracy * 16 == pytest.approx(round(accuracy * 16)), step
  assert sorted(values(records, 'train/accuracy')) == [2, 4]
  assert values(records, 'train/learning_rate') == pytest.approx(
      {s: np.interp(s - 1, [0, 2, 4], [0, 1e-3, 0]) for s in (2, 4)})
  assert sorted(values(records, 'train/pairs_per_s')) == [2, 4]
  assert all(v > 0 for v in values(records, 'train/pairs_per_s').values())
  # clu's progress report, every train.log_every steps after the first.
  assert sorted(values(records, 'steps_per_sec')) == [2, 4]
  assert all(v > 0 for v in values(records, 'steps_per_sec').values())
  uptime = values(records, 'uptime')
  assert sorted(uptime) == [2, 4] and 0 < uptime[2] < uptime[4]
  # TensorBoard holds the same values as metrics.jsonl: every (step, tag), to float32.
  logged = {(r['step'], k): v for r in records for k, v in r.items() if k != 'step'}
  scalars = runs.tensorboard_scalars(tmp_path)
  assert scalars.keys() == logged.keys()
  for key, value in logged.items():
    assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
  assert sorted(values(records, 'val/loss')) == [0, 2, 4]  # step 0, every 2, the last step
  assert sorted(values(records, 'val_map/mono/ap')) == [0, 3, 4]
  assert sorted(values(records, 'zero_shot/mono/ap')) == [0, 3, 4]
  assert 0 < values(records, 'val/accuracy')[0] <= 1

  eval_dir = tmp_path / 'eval'
  for name in ('xquad_r_before', 'xquad_r_after'):
    saved = json.loads((eval_dir / f'{name}.json').read_text())
    assert saved['langs'] == ['en', 'de', 'th'] and len(saved['pairs']) == 9
    assert (eval_dir / f'{name}.png').exists()
  after = json.loads((eval_dir / 'xquad_r_after.json').read_text())
  assert after['step'] == 4
  assert values(records, 'zero_shot/mono/ap')[4] == pytest.approx(after['summary']['mono']['ap'])
  assert (eval_dir / 'val_map_step3.json').exists()
  # The mlqa_r evaluator: its before/after reports on its languages, its metrics at steps 0, 4.
  for name in ('mlqa_r_before', 'mlqa_r_after'):
    saved = json.loads((eval_dir / f'{name}.json').read_text())
    assert saved['benchmark'] == 'mlqa_r' and saved['langs'] == ['de', 'es']
    assert len(saved['pairs']) == 4 and (eval_dir / f'{name}.png').exists()
  mlqa_after = json.loads((eval_dir / 'mlqa_r_after.json').read_text())
  assert mlqa_after['step'] == 4 and not list(eval_dir.glob('mlqa_r_step*'))
  assert sorted(values(records, 'mlqa_r/mono/ap')) == [0, 4]
  assert values(records, 'mlqa_r/cross/ap')[4] == pytest.approx(
      mlqa_after['summary']['cross']['ap'])
  # Step 3's benchmark evaluation: its JSON and per-query file, no heatmap, no TREC files.
  assert sorted(p.name for p in eval_dir.glob('xquad_r_step*')) == [
      'xquad_r_step3.json', 'xquad_r_step3_per_query.npz']
  assert json.loads((eval_dir / 'xquad_r_step3.json').read_text())['step'] == 3
  # TREC run files of the final figures only: the benchmark after training (not before, not
  # step 3, not val_map), the top config.eval.trec_depth (100) candidates of every query.
  langs = ('en', 'de', 'th')
  assert sorted(p.name for p in (eval_dir / 'trec').iterdir()) == ['mlqa_r_after', 'xquad_r_after']
  assert sorted(p.name for p in (eval_dir / 'trec' / 'xquad_r_after').iterdir()) == sorted(
      [f'{x}-{y}.run' for x in langs for y in langs] + [f'multi-{x}.run' for x in langs]
      + [f'{y}.qrels' for y in langs] + ['multi.qrels'])
  run = (eval_dir / 'trec' / 'xquad_r_after' / 'en-de.run').read_text().splitlines()
  per_query = collections.Counter(line.split()[0] for line in run)
  qids = eval_report.read_per_query(eval_dir / 'xquad_r_after_per_query.npz')['pairs']['en-de']
  assert sorted(per_query) == sorted(map(str, qids['qids']))
  assert set(per_query.values()) == {100}
  # val_map reports MRR beside mAP: multi MRR from the best rank of each query, in NumPy (mono
  # and cross have one relevant candidate per query, so there MRR is AP).
  assert sorted(values(records, 'val_map/multi/mrr')) == [0, 3, 4]
  multi = eval_report.read_per_query(eval_dir / 'val_map_step3_per_query.npz')['multi']
  expected = np.mean([np.mean(1.0 / multi[l]['rank_min']) for l in multi])
  assert values(records, 'val_map/multi/mrr')[3] == pytest.approx(expected, abs=1e-6)
  assert values(records, 'val_map/cross/mrr')[3] == pytest.approx(
      values(records, 'val_map/cross/ap')[3], abs=1e-6)

  summary = json.loads((eval_dir / 'summary.json').read_text())
  assert summary['steps'] == [0, 4]
  groups = summary['evals']['zero_shot']['groups']
  assert groups == {'all languages': ['en', 'de', 'th'], 'seen in training': ['en', 'de'],
                    'unseen in training': ['th']}
  table = summary['evals']['zero_shot']['summary']['all languages']
  assert table['before']['mono']['ap'] == pytest.approx(
      json.loads((eval_dir / 'xquad_r_before.json').read_text())['summary']['mono']['ap'])
  assert sum(summary['describe']['kinds'].values()) == 4
  assert results['summary'] == summary
  # Wall times: the whole run, and within it the training loop (its evaluations included).
  assert 0 < summary['train_s'] <= summary['wall_s'] and summary['train_s'] == results['train_s']
  assert summary['evals']['mlqa_r']['groups'] == {'all languages': ['de', 'es'],
                                                  'seen in training': ['de', 'es']}
  # The sentence overlap with the training pairs (MLQA-R en, de, es). XQuAD-R shares none (README,
  # "What keeps a comparison fair"); th is not trained on. The mlqa_r evaluator's benchmark is the
  # training data itself: each training query is one of its queries, each positive a candidate.
  for name, shared_langs in (('zero_shot', ()), ('mlqa_r', ('de', 'es'))):
    overlap = summary['evals'][name]['sentence_overlap']
    assert sorted(overlap['langs']) == sorted(summary['evals'][name]['groups']['all languages'])
    for lang, counts in overlap['langs'].items():
      queries = {train_pairs.query(lang, i).strip() for i in train_pairs.ids.get(lang, ())}
      positives = {train_pairs.positive(lang, i).strip() for i in train_pairs.ids.get(lang, ())}
      assert counts['train'] == len(queries | positives) and counts['eval'] > 0
      assert (counts['shared_queries'], counts['shared_candidates']) == (
          (len(queries), len(positives)) if lang in shared_langs else (0, 0)), (name, lang)
      assert counts['shared'] == (counts['train'] if lang in shared_langs else 0), (name, lang)
    assert overlap['total']['shared'] == sum(c['shared'] for c in overlap['langs'].values())
  assert summary['evals']['zero_shot']['sentence_overlap']['langs']['th']['train'] == 0

  mngr = checkpoint.manager(tmp_path, keep=2)
  assert sorted(mngr.all_steps()) == [2, 4]
  assert mngr.metrics(4)['val_loss'] == pytest.approx(values(records, 'val/loss')[4])

  # Eval mode on the same workdir evaluates the last checkpoint, and writes eval/xquad_r.json.
  config.mode = 'eval'
  del config.evals['mlqa_r']
  config.eval.langs = 'en'
  config.eval.trec_depth = 0  # no TREC files
  out = loop.run(config, tmp_path)
  assert out['zero_shot']['langs'] == ['en'] and (eval_dir / 'xquad_r.json').exists()
  assert sorted(p.name for p in (eval_dir / 'trec').iterdir()) == ['mlqa_r_after', 'xquad_r_after']
  evaluated = json.loads((eval_dir / 'xquad_r.json').read_text())
  before = json.loads((eval_dir / 'xquad_r_before.json').read_text())
  # Not bitwise: encoding en alone batches the texts otherwise than en, de, th together (float
  # rounding), and the tiny random model's near-ties flip (seen: 4e-5). The pretrained model is
  # 7e-4 away: eval mode evaluated the trained checkpoint.
  ap = evaluated['pairs']['en-en']['ap']
  assert ap == pytest.approx(after['pairs']['en-en']['ap'], abs=1e-4)
  assert abs(ap - before['pairs']['en-en']['ap']) > 3e-4


def test_jsonl_pairs_prepare_train_and_resume_only_under_the_same_config(tiny_checkpoint,
                                                                          data_dir, tmp_path):
  """README's own pairs (`data.train=pairs.jsonl`, with hard negatives), `mode=prepare` (shards
  only), and a workdir resumed under the same config but refused under another."""
  bench = pairs_lib.from_benchmark(squad_r.load_benchmark('xquad_r', data_dir,
                                                         ['en', 'de', 'es', 'th']))
  ids = bench.ids['en'][:40]
  path = tmp_path / 'pairs.jsonl'
  with path.open('w', encoding='utf-8') as f:  # README's format; negative: another id's positive
    for lang in bench.langs:
      for i, qid in enumerate(ids):
        f.write(json.dumps({'id': qid, 'lang': lang, 'query': bench.query(lang, qid),
                            'positive': bench.positive(lang, qid),
                            'negatives': [bench.positive(lang, ids[i - 1])]},
                           ensure_ascii=False) + '\n')
  workdir = tmp_path / 'run'
  config = tiny_config(tiny_checkpoint, data_dir, 2, **{
      'mode': 'prepare', 'data.train': str(path), 'train.hard_negatives': 1,
      'train.lang_clusters': 'a:en,de;b:es'})  # data.train_langs='en,de,es': th is left out
  del config.evals['val_map']
  config_lib.validate(config)
  assert loop.run(config, workdir) == {}
  assert sorted(p.name for p in workdir.iterdir()) == ['clusters.json', 'shards']
  [shard_dir] = list((workdir / 'shards').iterdir())
  manifest = json.loads((shard_dir / 'manifest.json').read_text())
  assert sorted(p.name for p in shard_dir.iterdir()) == sorted(['manifest.json',
                                                                *manifest['shards']])
  assert manifest['fields']['train'] == {
      'path': str(path), 'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
  assert manifest['hard_negatives'] == 1 and manifest['lengths']['negative']['num_texts'] == 16
  assert set(manifest['describe']['query_langs']) | set(
      manifest['describe']['positive_langs']) <= {'en', 'de', 'es'}
  assert any(q != p for q, p in (pair.split('-') for pair in manifest['describe']['lang_pairs']))
  for batch in input_pipeline.as_numpy(input_pipeline.make_dataset(shard_dir)):
    assert set(batch['ids']) <= set(ids) and batch['negative_tokens'].size

  config.mode = 'train'
  results = loop.run(config, workdir)
  assert results['steps'] == (0, 2)
  assert [p.name for p in (workdir / 'shards').iterdir()] == [shard_dir.name]  # reused
  records = read_metrics(workdir)
  assert np.isfinite(values(records, 'train/loss')[2]) and sorted(values(records, 'val/loss')) == [
      0, 2]
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  run_fields = (ckpt_dir / checkpoint.RUN_FIELDS).read_text()

  # The same config resumes (from the last step: nothing left to train).
  results = loop.run(config, workdir)
  assert results['steps'] == (2, 2) and int(results['state'].step) == 2
  # Another alpha (other batches) or learning rate (other updates) is refused, naming the field.
  for field, value, message in (('alpha', 0.3, 'batches.alpha: 0.5 -> 0.3'),
                                ('learning_rate', 2e-3, 'train.learning_rate: 0.001 -> 0.002')):
    changed = copy.deepcopy(config)
    changed.train[field] = value
    with pytest.raises(ValueError, match='holds checkpoints of another run; differing fields '
                       rf'\(stored -> this config\): {re.escape(message)}\. '):
      loop.run(changed, workdir)
  assert sorted(p.name for p in ckpt_dir.iterdir()) == ['2', checkpoint.RUN_FIELDS]
  assert (ckpt_dir / checkpoint.RUN_FIELDS).read_text() == run_fields


def test_jsonl_training_pairs_keep_data_train_langs(tmp_path):
  path = tmp_path / 'pairs.jsonl'
  path.write_text(''.join(
      json.dumps({'id': f'q{i}', 'lang': lang, 'query': f'{lang} q{i}', 'positive': f'{lang} p{i}'})
      + '\n' for lang in ('en', 'de', 'es') for i in range(10)))
  config = default.get_config()
  config.data.train, config.data.train_langs = str(path), 'es,de'
  train, val = loop.training_pairs(config)
  assert train.langs == ('de', 'es') and set(val.langs) <= {'de', 'es'}  # the file's order
  assert len(train) + len(val) == 20
  config.data.train_langs = 'de,fr'
  with pytest.raises(ValueError, match=rf'config.data.train_langs: {re.escape(str(path))} has no '
                     r'pairs in fr \(it has en, de, es\)'):
    loop.training_pairs(config)


def test_remote_workdir_holds_every_file_and_resumes(tiny_checkpoint, data_dir, tmp_path,
                                                     ram_workdir, monkeypatch):
  """The main job on a non-local workdir (`ram://`, see the fixture), then resumed there: shards,
  clusters.json, metrics.jsonl, TensorBoard events and eval reports go through epath and
  tf.io.gfile, and are read back from there.

  Checkpoints (and their run_fields.json) excepted: orbax writes arrays with tensorstore, whose
  kvstores are local files or gs:// (its gcs driver: test_checkpoint.py::
  test_gs_checkpoints_go_to_tensorstores_gcs_driver), never tf.io.gfile's ram://, so here they go
  to a local folder.
  """
  local_ckpt = io.path(tmp_path / 'local' / 'checkpoints')
  monkeypatch.setattr(checkpoint, 'checkpoint_dir', lambda workdir: local_ckpt)
  root = io.path(ram_workdir)
  config = tiny_config(tiny_checkpoint, data_dir, 4, **{'train.lang_clusters': 'a:en,de;b:es'})
  loop.run(config, ram_workdir)

  def names(folder):
    return sorted(p.name for p in io.path(folder).iterdir())

  assert names(root) == ['clusters.json', 'eval', 'metrics.jsonl', 'shards', 'tensorboard']
  [shard_dir] = list((root / 'shards').iterdir())
  manifest = io.read_json(shard_dir / 'manifest.json')
  assert names(shard_dir) == sorted(['manifest.json', *manifest['shards']])  # no temporaries
  assert io.read_json(root / 'clusters.json')['source'] == 'config'
  eval_files = set(names(root / 'eval'))
  for name in ('xquad_r_before', 'xquad_r_after'):
    assert {f'{name}.json', f'{name}.png', f'{name}_per_query.npz'} <= eval_files
  assert {'summary.json', 'trec', 'val_map_step3.json'} <= eval_files
  assert not any(n.startswith('.') for n in eval_files)
  after = io.read_json(root / 'eval' / 'xquad_r_after.json')
  per_query = eval_report.read_per_query(root / 'eval' / 'xquad_r_after_per_query.npz')
  assert per_query['langs'] == after['langs'] == ['en', 'de', 'th']
  assert np.mean(per_query['pairs']['de-en']['ap']) == pytest.approx(after['pairs']['de-en']['ap'],
                                                                     abs=1e-6)
  assert io.read_json(root / 'eval' / 'summary.json')['steps'] == [0, 4]
  assert names(root / 'tensorboard')[0].startswith('events.out.tfevents.')
  assert sorted(values(read_metrics(root), 'train/loss')) == [2, 4]
  assert names(local_ckpt) == ['2', '4', 'run_fields.json']
  # The OCDBT layout test_gs_checkpoints_go_to_tensorstores_gcs_driver builds the spec of.
  assert list((tmp_path / 'local' / 'checkpoints' / '4').rglob('ocdbt.process_0'))
  assert names(tmp_path) == ['local']  # nothing landed under a scheme-less 'ram:' folder

  # Resume from step 2 (drop checkpoint 4): the shards are read back from ram:// from step 2 on,
  # and metrics.jsonl loses the lines after step 2, then gets them again.
  before = read_metrics(root)
  (tmp_path / 'local' / 'checkpoints' / '4').rename(tmp_path / 'local' / 'dropped4')
  config.mode = 'train'  # the validation evaluators only
  results = loop.run(config, ram_workdir)
  assert results['steps'] == (2, 4)
  records = read_metrics(root)
  kept = [r for r in before if r['step'] <= 2]
  assert records[:len(kept)] == kept
  assert [r['step'] for r in records if 'train/loss' in r] == [2, 4]
  # Steps 2 and 3 again, from the same batches (read from step 2 on): the same mean loss.
  assert values(records, 'train/loss')[4] == pytest.approx(values(before, 'train/loss')[4],
                                                           rel=1e-5)
  assert [r['step'] for r in records if 'val/loss' in r] == [0, 2, 4]
  assert [r['step'] for r in records if 'zero_shot/mono/ap' in r] == [0]  # train mode: no rerun
  assert names(local_ckpt) == ['2', '4', 'run_fields.json']
  assert names(root / 'shards') == [shard_dir.name]  # the same batches, none added
  assert names(tmp_path) == ['local']


def test_nan_loss_stops_with_message(tiny_checkpoint, data_dir, tmp_path, monkeypatch):
  """A non-finite loss at step 3 stops the run; the checkpoints before it stay, finite."""
  real = step_lib.jit_train_step

  def poisoned(*args, **kwargs):
    fn = real(*args, **kwargs)

    def step(state, batch):
      poison = int(state.step) == 3
      state, metrics = fn(state, batch)
      return state, dict(metrics, loss=metrics['loss'] * float('nan') if poison else
                         metrics['loss'])
    return step

  monkeypatch.setattr(step_lib, 'jit_train_step', poisoned)
  config = tiny_config(tiny_checkpoint, data_dir, 10, **{
      'mode': 'train', 'train.checkpoint_every': 1, 'evals.val.every': 0,
      'evals.val_map.every': 0})
  with pytest.raises(FloatingPointError, match='loss is nan at step 3.*last good checkpoint is '
                     'step 3'):
    loop.run(config, str(tmp_path))
  mngr = ocp.CheckpointManager(checkpoint.checkpoint_dir(tmp_path))
  assert mngr.latest_step() == 3
  params = mngr.restore(3, args=ocp.args.StandardRestore())['params']
  assert all(np.isfinite(np.asarray(v)).all() for v in ocp.tree.to_flat_dict(params).values())


def test_validation_batches_hold_each_pair_once_over_processes(tiny_checkpoint, data_dir,
                                                               monkeypatch):
  """Every process hands in only its rows: the processes' rows make up the 1-process batch."""
  from hbt import sharding  # pylint: disable=g-import-not-at-top
  from hbt.model import build  # pylint: disable=g-import-not-at-top
  config = tiny_config(tiny_checkpoint, data_dir, 4)
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('xquad_r', data_dir, ['en', 'de']))
  tokenizer = build.load(config.model).tokenizer
  mesh = sharding.make_mesh(config.mesh)
  whole = evaluators.validation_batches(config, pairs, tokenizer, mesh, 2)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  parts = []
  for index in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    parts.append(evaluators.validation_batches(config, pairs, tokenizer, mesh, 2))
  for b, batch in enumerate(whole):
    for key, value in batch.items():
      assert parts[0][b][key].shape[0] == value.shape[0] // 2
      np.testing.assert_array_equal(np.concatenate([p[b][key] for p in parts]), value)


def test_held_out_benchmark_answers_are_positives():
  pairs = pairs_lib.PairSet(
      langs=('en', 'de'), ids={'en': ('a', 'b', 'c'), 'de': ('a', 'c')},
      examples={('en', 'a'): pairs_lib.Example('qa', 'shared'),
                ('en', 'b'): pairs_lib.Example('qb', 'shared'),
                ('en', 'c'): pairs_lib.Example('qc', 'pc'),
                ('de', 'a'): pairs_lib.Example('qa-de', 'pa-de'),
                ('de', 'c'): pairs_lib.Example('qc-de', 'pc-de')})
  bench = evaluators.benchmark_from_pairs(pairs, 'val_map')
  en = bench['en']
  assert en.candidates == ('shared', 'pc')  # one candidate per distinct text
  assert [en.candidates[en.answer_of(q)] for q in ('a', 'b', 'c')] == ['shared', 'shared', 'pc']
  assert bench['de'].answer_of('b') is None
  assert len(evaluators.benchmark_from_pairs(pairs, 'v', max_ids=2)['en'].query_ids) <= 2


def test_the_paper_config_fine_tunes_a_hub_checkpoint_with_its_prefixes(tiny_checkpoint, data_dir,
                                                                        tmp_path):
  """configs/paper.py's own settings run (README: `--config=configs/paper.py
  --config.model.checkpoint=...`): bf16, "Query: " / "Passage: " prefixes, the whole encoder
  fine-tuned (word embeddings included), at a tiny size otherwise."""
  from configs import paper  # pylint: disable=import-outside-toplevel
  from hbt import export  # pylint: disable=import-outside-toplevel
  overrides = runs.tiny_overrides(tiny_checkpoint, data_dir, 2)
  del overrides['model.dtype']  # the paper's bf16; the prefixes and freeze_embeddings: not set
  config = set_fields(paper.get_config(), {**overrides, 'mode': 'train'})
  assert (config.model.dtype, config.model.query_prefix, config.model.passage_prefix,
          config.train.freeze_embeddings) == ('bfloat16', 'Query: ', 'Passage: ', False)
  config_lib.validate(config)
  loop.run(config, str(tmp_path))
  record = json.loads((checkpoint.checkpoint_dir(tmp_path) / checkpoint.RUN_FIELDS).read_text())
  assert record['batches']['model']['query_prefix'] == 'Query: '
  assert record['batches']['model']['passage_prefix'] == 'Passage: '
  assert record['train']['freeze_embeddings'] is False
  step, saved = runs.restore_params(tmp_path)
  model, _, _ = export.trained_params(config, tmp_path)
  assert step == 2
  for name in step_lib.FROZEN_WHEN_FREEZING:  # trained, not frozen
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a, np.float32) - b).max()),
                         saved[name], model.params[name])
    assert max(jax.tree.leaves(moved)) > 1e-6, name
  assert model.tokenizer.query_prefix == 'Query: '
