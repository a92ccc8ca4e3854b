"""The sweep runner: run order, overrides, summaries, skipping finished runs and resuming.

A fake run function stands in for hbt.main: it writes what hbt.main leaves in a workdir (the
evaluation JSON and a shard manifest), with figures the test chooses, and the summary is read
from there as in a real run.
"""

import ast
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hbt.eval import evaluate
from hbt.experiments import summary as summary_lib
from hbt.experiments import sweep as sweep_lib

LANGS = ('en', 'de', 'th')  # th is not an MLQA-R language: unseen when training on MLQA-R.
NUM_QUESTIONS = 40
REPO = pathlib.Path(__file__).resolve().parents[1]
ARMS = ('x_x_mono', 'x_y', 'hybrid')
EFFECTS = {'x_x_mono': 0.0, 'x_y': 0.0, 'hybrid': 0.08, 'hybrid_twin': 0.08}  # AP added per query


def spec(**changes):
  out = {'name': 'toy', 'config': 'configs/default.py',
         'budget': {'train.steps': 4, 'train.batch_size': 8},
         'directions': {'mlqa_to_xquad': {'config': 'configs/xquad.py', 'data.train': 'mlqa_r'}},
         'arms': {a: {'train.strategy': a} for a in ARMS},
         'seeds': (0, 1, 2), 'contrasts': (('hybrid', 'x_x_mono'), ('hybrid', 'x_y'))}
  out.update(changes)
  return out


def fake_results(arm: str, seed, benchmark='xquad_r') -> dict:
  """Evaluation results with per-query AP: a base per question, the arm's effect, seed noise.

  The last question has no answer in th (as in MLQA-R, not every question is in every language).
  """
  base = np.random.default_rng(100).uniform(0.3, 0.8, NUM_QUESTIONS)
  rng = np.random.default_rng(1 + (seed or 0) * 7 + len(arm))
  effect = EFFECTS.get(arm, -0.1)
  ids = np.array([f'q{i}' for i in range(NUM_QUESTIONS)])
  has = {l: np.arange(NUM_QUESTIONS) < NUM_QUESTIONS - (l == 'th') for l in LANGS}
  per_pair, pairs, multi, multi_q = {}, {}, {}, {}

  def figures(ap):  # every per-query figure of the evaluation's layout, from the AP
    return {'ap': ap.tolist(), 'mrr': ap.tolist(), 'recall@1': (ap > 0.5).tolist(),
            'recall@10': np.ones_like(ap).tolist(), 'ndcg@10': ap.tolist()}

  for q in LANGS:
    for c in LANGS:
      keep = has[q] & has[c]
      ap = np.clip(base + effect + (0.1 if q == c else 0) + rng.normal(0, 0.02, NUM_QUESTIONS),
                   0, 1)[keep]
      per_pair[f'{q}-{c}'] = {'qids': ids[keep].tolist(), 'rank': [1] * int(keep.sum()),
                              **figures(ap)}
      pairs[f'{q}-{c}'] = {'ap': float(ap.mean()), 'recall@1': float(ap.mean()) - 0.1,
                           'recall@10': 0.9, 'mrr': float(ap.mean()), 'ndcg@10': 0.5,
                           'rank_min': 1.0, 'rank_max': 1.0, 'rank_distance': 0.0}
    ap = np.clip(base + effect - 0.3 + rng.normal(0, 0.02, NUM_QUESTIONS), 0, 1)[has[q]]
    multi_q[q] = {'qids': ids[has[q]].tolist(), 'rank_min': [3] * int(has[q].sum()),
                  'rank_max': [300] * int(has[q].sum()), **figures(ap)}
    multi[q] = {'ap': float(ap.mean()), 'recall@1': 0.2, 'recall@10': 0.7, 'mrr': 0.3,
                'ndcg@10': 0.4, 'rank_min': 3.0, 'rank_max': 300.0 - 100 * effect,
                'rank_distance': 297.0 - 100 * effect}
  # The counts that the group metric's multilingual figures of a sub-group come from.
  queries = {l: {'qids': ids[has[l]].tolist(),
                 'answers': np.stack([np.where(has[c], 0, -1) for c in LANGS], 1)[has[l]].tolist(),
                 'ahead': (rng.integers(0, 5, (int(has[l].sum()), len(LANGS), len(LANGS)))
                           * np.stack([has[c] for c in LANGS], 1)[has[l]][:, :, None]).tolist()}
             for l in LANGS}
  return {'benchmark': benchmark, 'langs': list(LANGS), 'pairs': pairs, 'multi': multi,
          'timing': {'encode_s': 5.0, 'score_s': 1.0},
          'per_query': {'langs': list(LANGS), 'sizes': [50] * len(LANGS), 'queries': queries,
                        'pairs': per_pair, 'multi': multi_q}}


def fake_run(spec_, run, workdir: pathlib.Path, results=None, curves=None) -> dict:
  """Writes a run's outputs as hbt.main would, then summarises them as the real runner does.

  results: the evaluation results (default fake_results of the arm and seed); curves: the rows of
  metrics.jsonl of a trained run (default two rows with a loss and a validation loss).
  """
  del spec_
  config = sweep_lib.run_config(run)
  (workdir / 'eval').mkdir(parents=True)
  results = results or fake_results(run['arm'], run['seed'])
  (workdir / 'eval' / 'xquad_r.json').write_text(json.dumps(results))
  if run['arm'] != sweep_lib.ZERO_SHOT:
    english = {'x_x_mono': 1, 'x_y': 6}.get(run['arm'], 3)
    manifest = {'describe': {'kinds': {'mono': 2, 'cross': 2}, 'lang_pairs': {
        'en-en': english, 'de-th': 8 - english}, 'query_langs': {'en': english, 'de': 8 - english},
                             'positive_langs': {'en': english, 'th': 8 - english}},
                'false_negatives': {'masked': 3, 'per_batch': 0.75}}
    (workdir / 'shards' / 'abc').mkdir(parents=True)
    (workdir / 'shards' / 'abc' / 'manifest.json').write_text(json.dumps(manifest))
    rows = curves or [{'step': 2, 'loss': 1.23456789}, {'step': 4, 'loss': 0.5, 'val/loss': 0.7}]
    (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  outputs = summary_lib.read_run_outputs(workdir)
  return summary_lib.make_summary(run, config, outputs, {'train_s': 60.0, 'eval_s': 30.0})


def test_runs_are_zero_shot_then_seed_major_with_merged_overrides():
  runs = sweep_lib.runs(spec())
  assert [r['name'] for r in runs[:5]] == [
      'mlqa_to_xquad.zero_shot', 'mlqa_to_xquad.x_x_mono.seed0', 'mlqa_to_xquad.x_y.seed0',
      'mlqa_to_xquad.hybrid.seed0', 'mlqa_to_xquad.x_x_mono.seed1']
  assert len(runs) == 1 + 3 * 3
  hybrid = runs[3]['overrides']
  assert hybrid == {'train.steps': 4, 'train.batch_size': 8, 'data.train': 'mlqa_r',
                    'train.strategy': 'hybrid', 'seed': 0}
  assert runs[3]['config'] == 'configs/xquad.py'
  cmd = sweep_lib.command(runs[3], pathlib.Path('w'), 'train')
  assert cmd[1:5] == ['-m', 'hbt.main', '--config=configs/xquad.py', '--workdir=w']
  assert '--config.train.strategy=hybrid' in cmd and cmd[-1] == '--config.mode=train'


@pytest.mark.parametrize('name, directions, temperature', [
    ('strategies_t0_01', 2, 0.01), ('strategies', 1, 0.05)])
def test_the_strategies_sweeps_are_valid_and_fair(name, directions, temperature):
  strategies = sweep_lib.load_sweep(f'configs/sweeps/{name}.py')
  runs = sweep_lib.runs(strategies)
  assert len(runs) == directions * (1 + 5 * 3)
  expected = {'configs/xquad.py', 'configs/mlqa.py'} if directions == 2 else {'configs/xquad.py'}
  assert {r['config'] for r in runs} == expected
  trained = [r for r in runs if r['arm'] != sweep_lib.ZERO_SHOT]
  budgets = {(r['overrides']['train.steps'], r['overrides']['train.batch_size']) for r in trained}
  assert budgets == {(100, 32)}
  assert {r['overrides']['train.strategy'] for r in trained} == {
      'x_x_mono', 'x_y', 'x_x', 'en_en', 'hybrid'}
  assert {sweep_lib.run_config(r).train.loss_temperature for r in trained} == {temperature}


def test_the_alpha_sweep_varies_alpha_only_with_denser_validation():
  alpha, strategies = (sweep_lib.load_sweep(f'configs/sweeps/{n}.py')
                       for n in ('alpha', 'strategies_t0_01'))
  assert alpha['x_axis'] == 'train.alpha' and alpha['threshold'] == 0.9
  assert set(alpha['low_resource']) == {'hi', 'th', 'vi', 'el', 'tr'}
  assert [a['train.alpha'] for a in alpha['arms'].values()] == [i / 10 for i in range(11)]
  assert alpha['seeds'] == strategies['seeds']
  assert alpha['budget'] == {**strategies['budget'], 'evals.val.every': 10,
                             'evals.val_map.every': 10}
  # alpha 0.5 is strategies_t0_01's hybrid arm; only the validation cadence differs.
  twin = [r for r in sweep_lib.runs(alpha) if r['name'] == 'mlqa_to_xquad.alpha0_5.seed1'][0]
  hybrid = [r for r in sweep_lib.runs(strategies) if r['name'] == 'mlqa_to_xquad.hybrid.seed1'][0]
  differ = {k for k in twin['overrides'].keys() | hybrid['overrides'].keys()
            if twin['overrides'].get(k) != hybrid['overrides'].get(k)}
  assert differ == {'evals.val.every', 'evals.val_map.every'}
  assert sweep_lib.run_config(twin).evals.val_map.every == 10


@pytest.mark.parametrize('changes, message', [
    ({'x_axis': 'train.alpha'}, "arm 'x_x_mono' must set it to a number"),
    ({'x_axis': 'train.strategy'}, 'must set it to a number'),
    ({'threshold': 0}, 'threshold must be a fraction'),
    ({'threshold': 1.5}, 'threshold must be a fraction'),
    ({'low_resource': 'hi'}, 'low_resource must be a tuple'),
    ({'seeds': (0, 0)}, 'distinct'),
    ({'arms': {'a.b': {}}}, 'without'),
    ({'contrasts': (('hybrid', 'nope'),)}, 'arm the sweep does not have'),
    ({'budget': {'train.stepz': 3}}, 'no field train.stepz'),
    ({'budget': {'train.batch_size': 1}}, 'config.train.batch_size'),
])
def test_bad_sweeps_fail_naming_the_field(changes, message):
  with pytest.raises(sweep_lib.SweepError, match=message):
    sweep_lib.validate(spec(**changes))


def test_sweep_skips_finished_runs_and_resumes(tmp_path):
  calls = []

  def flaky(spec_, run, workdir):
    calls.append(run['name'])
    if len(calls) == 4:
      raise RuntimeError('killed')
    return fake_run(spec_, run, workdir)

  summaries = tmp_path / 'summaries'
  with pytest.raises(RuntimeError, match='killed'):
    sweep_lib.run_sweep(spec(), tmp_path / 'runs', summaries, run_fn=flaky, log=lambda _: None)
  assert len(list(summaries.glob('*.json.gz'))) == 3
  calls.clear()
  out = sweep_lib.run_sweep(spec(), tmp_path / 'runs2', summaries, run_fn=fake_run_recorded(calls),
                            max_runs=2, log=lambda _: None)
  assert calls == ['mlqa_to_xquad.hybrid.seed0', 'mlqa_to_xquad.x_x_mono.seed1']
  assert len(out['skipped']) == 3 and out['ran'] == calls
  calls.clear()
  out = sweep_lib.run_sweep(spec(), tmp_path / 'runs3', summaries, run_fn=fake_run_recorded(calls),
                            log=lambda _: None)
  assert len(calls) == 5 and len(out['done']) == 10
  out = sweep_lib.run_sweep(spec(), tmp_path / 'runs4', summaries, run_fn=None, log=lambda _: None)
  assert out['ran'] == [] and len(out['skipped']) == 10  # nothing left: run_fn never called
  assert json.loads((summaries / '_sweep.json').read_text())['name'] == 'toy'
  # A changed budget does not silently reuse the summaries made under the old one.
  with pytest.raises(sweep_lib.SweepError, match=r"train.steps: 4 there, 5 now"):
    sweep_lib.run_sweep(spec(budget={'train.steps': 5, 'train.batch_size': 8}), tmp_path / 'r5',
                        summaries, run_fn=None, log=lambda _: None)
  # Nor does a changed default of the config (same overrides, another effective temperature).
  path = summaries / 'mlqa_to_xquad.hybrid.seed0.json.gz'
  done = summary_lib.read(path)
  done['budget']['loss_temperature'] = 0.5
  summary_lib.write(path, done)
  with pytest.raises(sweep_lib.SweepError,
                     match=r"\(effective\) train.loss_temperature: 0.5 there, 0.01 now"):
    sweep_lib.run_sweep(spec(), tmp_path / 'r6', summaries, run_fn=None, log=lambda _: None)
  # The zero-shot evaluation trains nothing: training settings do not invalidate it.
  summary_lib.write(path, {**done, 'budget': {**done['budget'], 'loss_temperature': 0.01}})
  out = sweep_lib.run_sweep(spec(budget={'train.steps': 4, 'train.batch_size': 8,
                                         'train.loss_temperature': 0.01}),
                            tmp_path / 'r7', summaries, run_fn=None, log=lambda _: None)
  assert 'mlqa_to_xquad.zero_shot' in out['skipped'] and len(out['skipped']) == 10


def fake_run_recorded(calls):
  def run(spec_, run_, workdir):
    calls.append(run_['name'])
    return fake_run(spec_, run_, workdir)
  return run


def test_only_and_dry_run(tmp_path):
  lines = []
  sweep_lib.run_sweep(spec(), tmp_path / 'runs', tmp_path / 's', run_fn=None, only='*.hybrid.*',
                      dry_run=True, log=lines.append)
  commands = [l for l in lines if 'hbt.main' in l]
  assert len(commands) == 3 * 2  # train + eval for the three hybrid seeds
  assert not (tmp_path / 's').exists()


def test_cli_dry_run_prints_the_runs_it_would_run_and_writes_nothing(tmp_path):
  """python -m hbt.experiments.sweep --only --max_runs --dry_run on a toy sweep file: the commands
  of the first --max_runs unfinished runs that --only names, finished ones skipped, no file."""
  sweep_file = tmp_path / 'toy.py'
  sweep_file.write_text(f'def get_sweep():\n  return {spec()!r}\n')
  summaries = tmp_path / 'summaries'
  zero_shot = sweep_lib.runs(spec())[0]
  summary_lib.write(summaries / f'{zero_shot["name"]}.json.gz',
                    fake_run(spec(), zero_shot, tmp_path / 'zero_shot'))
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  result = subprocess.run(
      [sys.executable, '-m', 'hbt.experiments.sweep', f'--sweep={sweep_file}',
       f'--workdir={tmp_path / "runs"}', f'--summaries={summaries}',
       '--only=*.zero_shot,*.hybrid.*,*.x_y.seed2', '--max_runs=2', '--dry_run'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  commands = [line.split() for line in result.stdout.splitlines() if 'hbt.main' in line]
  # zero_shot is done; hybrid seeds 0 and 1 are the first two to run (train, then eval).
  assert [(c[c.index('-m') + 2], c[-1]) for c in commands] == [
      ('--config=configs/xquad.py', '--config.mode=train'),
      ('--config=configs/xquad.py', '--config.mode=eval')] * 2
  assert [c[c.index('-m') + 3] for c in commands] == [
      f'--workdir={tmp_path / "runs" / f"mlqa_to_xquad.hybrid.seed{s}"}' for s in (0, 0, 1, 1)]
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before


def test_the_mono_target_sweep_varies_temperature_and_learning_rate_of_the_hybrid_arm():
  """configs/sweeps/mono_target.py: the strategies sweep's hybrid run (temperature 0.05), with
  the temperature, the learning rate or both changed; its committed summaries match it."""
  mono, strategies = (sweep_lib.load_sweep(f'configs/sweeps/{n}.py')
                      for n in ('mono_target', 'strategies'))
  runs = sweep_lib.runs(mono)
  expected = {'temp0_01': (3e-5, 0.01), 'lr1e5_temp0_01': (1e-5, 0.01), 'lr1e5': (1e-5, 0.05),
              'temp0_02': (3e-5, 0.02)}
  assert [r['name'] for r in runs] == ['mlqa_to_xquad.zero_shot'] + [
      f'mlqa_to_xquad.{arm}.seed0' for arm in expected]
  hybrid = next(r for r in sweep_lib.runs(strategies) if r['name'] == 'mlqa_to_xquad.hybrid.seed0')
  assert sweep_lib.run_config(hybrid).train.loss_temperature == 0.05
  for run in runs[1:]:
    train = sweep_lib.run_config(run).train
    assert (train.learning_rate, train.loss_temperature) == expected[run['arm']], run['name']
    a, b = run['overrides'], hybrid['overrides']
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} <= {
        'train.learning_rate', 'train.loss_temperature'}
  folder = REPO / 'docs' / 'results' / 'runs' / 'mono_target'
  finished = [r for r in runs if (folder / f'{r["name"]}.json.gz').exists()]
  assert len(finished) >= 3  # zero-shot, temp0_01 and lr1e5_temp0_01 are committed
  for run in finished:  # raises if a summary was made under other settings
    sweep_lib.check_finished(run, folder / f'{run["name"]}.json.gz')


def test_summary_holds_figures_groups_and_per_query_ap(tmp_path):
  run = sweep_lib.runs(spec())[3]
  summary_lib.write(tmp_path / 'r.json.gz', fake_run(spec(), run, tmp_path / 'w'))
  s = summary_lib.read(tmp_path / 'r.json.gz')
  results = fake_results('hybrid', 0)
  assert s['groups'] == {'all': ['en', 'de', 'th'], 'seen': ['en', 'de'], 'unseen': ['th']}
  mono = np.mean([results['pairs'][f'{l}-{l}']['ap'] for l in ('en', 'de')])
  assert s['summary']['seen']['mono']['ap'] == pytest.approx(mono, abs=1e-5)
  # The group metric: multi of the unseen group {th} ranks th's answer among th's candidates.
  ahead = np.array(results['per_query']['queries']['th']['ahead'])
  assert s['group_metric'] == evaluate.GROUP_METRIC
  assert s['summary']['unseen']['multi']['ap'] == pytest.approx(np.mean(1 / (1 + ahead[:, 2, 2])),
                                                               abs=1e-5)
  assert s['budget']['steps'] == 4 and s['budget']['batch_size'] == 8 and s['seed'] == 0
  assert s['timing']['train_s'] == 60.0 and s['machine']['cores'] >= 1
  assert s['curves'] == [{'step': 2, 'loss': 1.23457}, {'step': 4, 'loss': 0.5, 'val/loss': 0.7}]
  assert s['describe']['lang_pairs'] == {'en-en': 3, 'de-th': 5}
  assert s['false_negatives'] == {'masked': 3, 'per_batch': 0.75}
  pq = results['per_query']['pairs']
  order = np.argsort([f'q{i}' for i in range(NUM_QUESTIONS)])  # the summary's qids are sorted
  assert s['per_query']['qids'] == sorted(f'q{i}' for i in range(NUM_QUESTIONS))
  th = np.append(pq['th-th']['ap'], np.nan)[order]  # the last question is not asked in th
  np.testing.assert_allclose(np.array(s['per_query']['mono']['th'], float), th, atol=1e-4)
  cross_de = np.mean([pq['de-en']['ap'], pq['de-th']['ap'] + [np.nan]], axis=0)
  cross_de[-1] = pq['de-en']['ap'][-1]  # and has no th answer: de-en only
  np.testing.assert_allclose(s['per_query']['cross']['de'], cross_de[order], atol=1e-4)
  assert (tmp_path / 'r.json.gz').stat().st_size < 20_000


def test_missing_results_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='xquad_r.json'):
    summary_lib.read_run_outputs(tmp_path)
  (tmp_path / 'bad.json.gz').write_bytes(b'nope')
  with pytest.raises(ValueError, match='bad.json.gz'):
    summary_lib.read(tmp_path / 'bad.json.gz')


def _literal(text: str):
  """A flag value as Python reads it (int, float, bool, tuple), else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def test_smoke_real_runs_with_a_tiny_model(tmp_path, data_dir, monkeypatch):
  """hbt.main subprocesses end to end (zero-shot, train, eval), summarised and resumed."""
  from tests import runs  # pylint: disable=g-import-not-at-top
  from tests import test_weights  # pylint: disable=g-import-not-at-top
  test_weights.write_checkpoint(tmp_path / 'tiny', 'xlmr')
  monkeypatch.delenv('XLA_FLAGS', raising=False)  # one device, as a user runs it
  tiny = dict(arg.removeprefix('--config.').split('=', 1)
              for arg in runs.tiny(tmp_path / 'tiny', data_dir, 2))
  tiny = {k: _literal(v) for k, v in tiny.items()}  # '2' -> 2, '0.2' -> 0.2, 'hf' stays
  tiny.update({'train.learning_rate': 1e-3, 'eval.progress': False, 'eval.langs': 'en,th',
               'evals.val.every': 2, 'train.checkpoint_every': 2})
  toy = spec(budget=tiny, arms={'hybrid': {'train.strategy': 'hybrid'}}, seeds=(0,), contrasts=())
  sweep_lib.validate(toy)
  out = sweep_lib.run_sweep(toy, tmp_path / 'runs', tmp_path / 'summaries', log=lambda _: None)
  assert out['ran'] == ['mlqa_to_xquad.zero_shot', 'mlqa_to_xquad.hybrid.seed0']
  s = summary_lib.read(tmp_path / 'summaries' / 'mlqa_to_xquad.hybrid.seed0.json.gz')
  assert s['langs'] == ['en', 'th'] and s['groups']['unseen'] == ['th']
  assert set(s['pairs']) == {'en-en', 'en-th', 'th-en', 'th-th'}
  assert 0 <= s['summary']['all']['mono']['ap'] <= 1 and s['budget']['steps'] == 2
  assert sum(s['describe']['kinds'].values()) == 2 and s['timing']['train_s'] > 0
  assert any('val/loss' in row for row in s['curves'])  # the rows of metrics.jsonl
  assert len(s['per_query']['qids']) == 1190 and len(s['per_query']['mono']['th']) == 1190
  assert not (tmp_path / 'runs' / 'mlqa_to_xquad.hybrid.seed0' / 'checkpoints').exists()
  assert sweep_lib.run_sweep(toy, tmp_path / 'runs', tmp_path / 'summaries', run_fn=None,
                             log=lambda _: None)['ran'] == []
