"""The results report, rendered from small synthetic summaries that the test writes."""

import re
import subprocess
import sys

import numpy as np
import pytest

from hbt.experiments import report
from hbt.experiments import summary as summary_lib
from hbt.experiments import sweep as sweep_lib
from tests import test_sweep


@pytest.fixture(scope='module')
def summaries(tmp_path_factory):
  """Summaries of a toy sweep: hybrid and its twin are 0.08 AP above the two baselines."""
  root = tmp_path_factory.mktemp('sweep')
  spec = test_sweep.spec(
      arms={**{a: {'train.strategy': a} for a in test_sweep.ARMS},
            'hybrid_twin': {'train.strategy': 'hybrid', 'train.learning_rate': 1e-5}},
      contrasts=(('hybrid', 'x_x_mono'), ('hybrid', 'hybrid_twin')))
  sweep_lib.run_sweep(spec, root / 'runs', root / 'summaries', run_fn=test_sweep.fake_run,
                      log=lambda _: None)
  return root / 'summaries'


def _row(markdown: str, first_cell: str) -> list[str]:
  for line in markdown.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells[0] == first_cell:
      return cells
  raise AssertionError(f'no row {first_cell!r} in\n{markdown}')


def test_tables_hold_means_and_stds_over_seeds(summaries, tmp_path):
  out = tmp_path / 'docs' / 'results.md'
  report.write_report(summaries, out)
  text = out.read_text()
  runs = [summary_lib.read(summaries / f'mlqa_to_xquad.hybrid.seed{s}.json.gz') for s in range(3)]
  for column, setting in ((1, 'mono'), (2, 'cross'), (3, 'multi')):
    values = [np.mean([r['pairs'][f'{q}-{c}']['ap'] if setting != 'multi' else r['multi'][q]['ap']
                       for q in test_sweep.LANGS for c in test_sweep.LANGS
                       if (q == c) == (setting == 'mono') or setting == 'multi'])
              for r in runs]
    expected = report.fmt(np.mean(values), np.std(values, ddof=1))
    assert re.match(r'^\.\d{3} ± \.\d{3}$', expected)
    assert _row(text, 'hybrid')[column] == expected, setting
  assert _row(text, 'hybrid')[-1] == '3'  # seeds
  # The twin's learning rate differs: the header says so instead of quoting one run's.
  assert 'peak learning rate varies by arm (1e-05, 3e-05), warmup' in text
  zero = summary_lib.read(summaries / 'mlqa_to_xquad.zero_shot.json.gz')
  assert _row(text, 'zero-shot')[1] == report.fmt(zero['summary']['all']['mono']['ap'])
  # Per-language tables: the unseen language last and marked; the language mix from the counts.
  assert '| strategy | en | de | th* |' in text
  assert _row(text.split('### Language mix')[1], 'X-Y')[2:4] == ['75%', '75%']
  assert _row(text.split('### Language mix')[1], 'X-Y')[5] == '0.75'  # false negatives / batch
  steps, values = report.curve(runs, 'val/loss')
  assert steps == [4] and values == pytest.approx([0.7])
  for png in ('toy_map.png', 'toy_langmix.png', 'toy_curves.png'):
    assert (tmp_path / 'docs' / 'results' / png).stat().st_size > 1000


def test_paired_tests_and_headline_are_computed(summaries, tmp_path):
  runs = report.Runs(*report.load(summaries))
  strong = report.contrast(runs, 'mlqa_to_xquad', 'hybrid', 'x_x_mono', 'mono')
  null = report.contrast(runs, 'mlqa_to_xquad', 'hybrid', 'hybrid_twin', 'mono')
  assert strong['p_value'] < 0.001 and strong['diff'] == pytest.approx(0.08, abs=0.01)
  assert null['p_value'] > 0.01 and abs(null['diff']) < 0.01
  # The question-level difference: AP averaged over seeds and languages, against NumPy.
  def mono(arm):  # per question: mean over seeds and the languages that ask it
    sums, counts = np.zeros(test_sweep.NUM_QUESTIONS), np.zeros(test_sweep.NUM_QUESTIONS)
    for seed in range(3):
      for l in test_sweep.LANGS:
        pair = test_sweep.fake_results(arm, seed)['per_query']['pairs'][f'{l}-{l}']
        index = [int(q[1:]) for q in pair['qids']]
        sums[index] += pair['ap']
        counts[index] += 1
    return sums / counts
  assert strong['queries'] == test_sweep.NUM_QUESTIONS
  assert strong['query_diff'] == pytest.approx(np.mean(mono('hybrid') - mono('x_x_mono')),
                                               abs=1e-4)
  text = report.render(runs, 'runs', 'out.md', tmp_path, 'results')
  (row,) = [l for l in text.splitlines() if '| hybrid − X-X-mono | mono |' in l]
  cells = [c.strip() for c in row.split('|')]
  assert cells[4:6] == [report._signed(strong['diff']), report._signed(strong['query_diff'])]  # pylint: disable=protected-access
  headline = text.split('### Headline (computed)')[1].split('###')[0]
  assert 'hybrid (α' not in headline  # the toy arms carry no alpha override
  assert ('hybrid beat X-X-mono (higher in: mono, cross, multi; lower in: none; seeds 0, 1, 2 '
          '(both arms))' in headline)
  assert 'hybrid did not differ significantly from hybrid_twin' in headline


def test_arms_cut_short_are_compared_on_their_common_seeds(summaries):
  """An arm with fewer seeds is compared on the seeds both arms have; the seed noise is each
  arm's std over all its seeds."""
  full = report.Runs(*report.load(summaries))
  spec, every = report.load(summaries)
  short = report.Runs(spec, [s for s in every if not (s['arm'] == 'x_x_mono' and s['seed'] != 1)])
  c = report.contrast(short, 'mlqa_to_xquad', 'hybrid', 'x_x_mono', 'cross')
  ap = lambda arm, seed: next(s['summary']['all']['cross']['ap'] for s in every
                              if s['arm'] == arm and s['seed'] == seed)
  assert c['diff'] == pytest.approx(ap('hybrid', 1) - ap('x_x_mono', 1), abs=1e-12)
  assert c['seeds'] == (1, 1)
  want_std = np.std([ap('hybrid', seed) for seed in range(3)], ddof=1)
  assert c['std_a'] == pytest.approx(want_std, abs=1e-12) and not np.isfinite(c['std_b'])
  # The per-question test too: seed 1 only, not hybrid's mean over three seeds.
  one = report.Runs(spec, [s for s in every if s['seed'] in (None, 1)])
  assert c['query_diff'] == pytest.approx(
      report.contrast(one, 'mlqa_to_xquad', 'hybrid', 'x_x_mono', 'cross')['query_diff'],
      abs=1e-12)
  assert c['query_diff'] != pytest.approx(
      report.contrast(full, 'mlqa_to_xquad', 'hybrid', 'x_x_mono', 'cross')['query_diff'],
      abs=1e-9)
  assert 'seed 1 (both arms)' in report.headline(short)


def test_rebuild_replaces_only_its_section(summaries, tmp_path):
  out = tmp_path / 'results.md'
  out.write_text('# Results\n\nHand-written notes.\n\n<!-- begin sweep other -->\nx\n'
                 '<!-- end sweep other -->\n')
  report.write_report(summaries, out)
  first = out.read_text()
  report.write_report(summaries, out)
  second = out.read_text()
  assert first == second
  assert second.count('<!-- begin sweep toy -->') == 1 and 'Hand-written notes.' in second
  assert '<!-- begin sweep other -->\nx\n<!-- end sweep other -->' in second


def test_no_summaries_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no run summaries'):
    report.load(tmp_path)


@pytest.mark.parametrize('diff, p, noise, word, query_diff', [
    (0.02, 0.001, 0.005, 'higher; seed-to-seed std .005', None),
    (-0.02, 0.001, float('nan'), 'lower; seed noise unknown (one seed)', None),
    (0.004, 0.001, 0.005, 'significant over questions but within the seed noise', None),
    (0.02, 0.2, 0.005, 'no significant difference', None),
    (0.02, None, 0.005, 'untested', None),
    # The macro mAP and the question mean disagree in sign: no verdict either way.
    (0.02, 0.001, 0.005, 'significant over questions, but the macro mAP moves the other', -0.01),
])
def test_verdict_weighs_the_test_and_the_seed_noise(diff, p, noise, word, query_diff):
  c = {'diff': diff, 'p_value': p, 'noise': noise, 'query_diff': diff if query_diff is None
       else query_diff}
  assert report.verdict(c).startswith(word)
  assert report.decisive(c, 1 if diff > 0 else -1) == word.startswith(('higher', 'lower'))


# ------------------------------------------------------------- a sweep over alpha (x_axis)

ALPHAS = (0.0, 0.5, 1.0)
LOW_RESOURCE = ('de', 'th', 'hi')  # hi is not evaluated here: left out of the means
# val_map/multi/ap at steps 0, 10, 20, 30 per (alpha, seed). Step 0 is 0.5 everywhere; the best
# final mean is alpha 0.5's 0.95, so the threshold is 0.5 + 0.9 x (0.95 - 0.5) = 0.905.
MULTI_AP = {(0.0, 0): (0.5, 0.92, 0.92, 0.92), (0.0, 1): (0.5, 0.6, 0.8, 0.92),  # mean .86 -> .92
            (0.5, 0): (0.5, 0.8, 0.92, 1.0), (0.5, 1): (0.5, 0.7, 0.9, 0.9),  # mean .91 at 20
            (1.0, 0): (0.5, 0.55, 0.6, 0.65), (1.0, 1): (0.5, 0.55, 0.6, 0.7)}
EXPECTED_STEPS = {'α=0.0': '30 (10, 30)', 'α=0.5': '20 (20, n.r.)',
                  'α=1.0': 'not reached (n.r., n.r.)'}


def alpha_results(arm, seed) -> dict:
  """fake_results with per-query MRR unlike AP (seeded), and the pair / multi means from them."""
  results = test_sweep.fake_results(arm, seed)
  rng = np.random.default_rng([sum(map(ord, arm)), 0 if seed is None else seed + 1])
  per_query = results['per_query']
  for name, entries, means in (('pairs', per_query['pairs'], results['pairs']),
                               ('multi', per_query['multi'], results['multi'])):
    for key, entry in entries.items():
      entry['mrr'] = (1.0 / rng.integers(1, 6, len(entry['qids']))).tolist()
      means[key]['mrr'] = float(np.mean(entry['mrr']))
  return results


def alpha_run(spec_, run, workdir):
  """A run with alpha_results and validation curves every 10 steps (MULTI_AP; mono only drops)."""
  if run['arm'] == sweep_lib.ZERO_SHOT:
    return test_sweep.fake_run(spec_, run, workdir, alpha_results(run['arm'], None))
  alpha = run['overrides']['train.alpha']
  rows = [{'step': 10 * i, 'val_map/multi/ap': v, 'val_map/mono/ap': 0.8 - 0.05 * i,
           'val/loss': 2.0 - alpha * i / 10} for i, v in enumerate(MULTI_AP[alpha, run['seed']])]
  return test_sweep.fake_run(spec_, run, workdir, alpha_results(run['arm'], run['seed']), rows)


@pytest.fixture(scope='module')
def alpha_summaries(tmp_path_factory):
  root = tmp_path_factory.mktemp('alpha')
  spec = test_sweep.spec(
      name='alpha', arms={f'alpha{a}'.replace('.', '_'): {'train.strategy': 'hybrid',
                                                        'train.alpha': a} for a in ALPHAS},
      seeds=(0, 1), contrasts=(), x_axis='train.alpha', threshold=0.9, low_resource=LOW_RESOURCE)
  sweep_lib.run_sweep(spec, root / 'runs', root / 'summaries', run_fn=alpha_run,
                      log=lambda _: None)
  return root / 'summaries'


def test_steps_to_threshold_by_hand(alpha_summaries):
  runs = report.Runs(*report.load(alpha_summaries))
  found = report.threshold_of(runs, 'mlqa_to_xquad', 'val_map/multi/ap', 0.9)
  assert found['start'] == pytest.approx(0.5) and found['best'] == pytest.approx(0.95)
  assert found['best_arm'] == 'alpha0_5' and found['threshold'] == pytest.approx(0.905)
  assert report.steps_to_threshold(runs.get('mlqa_to_xquad', 'alpha0_0'), 'val_map/multi/ap',
                                   0.905) == (30, [10, 30])
  # Mono only drops: no arm gained, no threshold.
  assert report.threshold_of(runs, 'mlqa_to_xquad', 'val_map/mono/ap', 0.9)['threshold'] is None
  table = report.table_threshold(runs, 0.9)
  assert 'val_map/multi/ap: start .500, best .950 (α=0.5), threshold .9050' in table
  assert 'val_map/mono/ap: start .800, best .650 (α=0.0), threshold – (no arm gained' in table
  for label, cell in EXPECTED_STEPS.items():
    assert _row(table, label)[1:] == ['–', cell]  # columns: mono, multi (in THRESHOLD_CURVES order)


def test_alpha_report_mrr_per_language_and_plots(alpha_summaries, tmp_path):
  out = tmp_path / 'docs' / 'results.md'
  report.write_report(alpha_summaries, out)
  text = out.read_text()
  for png in ('alpha_curves.png', 'alpha_final.png', 'alpha_map.png'):
    assert (tmp_path / 'docs' / 'results' / png).stat().st_size > 1000
  assert '![final figures against train.alpha](results/alpha_final.png)' in text
  assert _row(text.split('#### Steps to threshold')[1], 'α=0.5')[2] == EXPECTED_STEPS['α=0.5']
  # MRR per language against NumPy over the per-query figures, mean over the seeds.
  mrr = text.split('### MRR per language')[1]
  low = ['de', 'th']
  for setting in ('mono', 'cross', 'multi'):
    table = mrr.split(f'{setting} MRR**')[1].split('**')[0]
    assert '| strategy | en | de† | th*† |' in table
    for alpha in ALPHAS:
      arm = f'alpha{alpha}'.replace('.', '_')
      per_seed = []
      for seed in (0, 1):
        pq = alpha_results(arm, seed)['per_query']
        if setting == 'mono':
          per_seed.append([np.mean(pq['pairs'][f'{x}-{x}']['mrr']) for x in test_sweep.LANGS])
        elif setting == 'cross':
          per_seed.append([np.mean([np.mean(pq['pairs'][f'{x}-{y}']['mrr'])
                                    for y in test_sweep.LANGS if y != x])
                           for x in test_sweep.LANGS])
        else:
          per_seed.append([np.mean(pq['multi'][x]['mrr']) for x in test_sweep.LANGS])
      cells = [float(c) for c in _row(table, f'α={alpha}')[1:]]
      # Three decimals shown, of figures the summary keeps to five.
      np.testing.assert_allclose(cells, np.mean(per_seed, axis=0), atol=5e-4 + 1e-5)
      if setting == 'cross':  # the low-resource mean (de, th), mean ± std over seeds
        lows = [np.mean([row[test_sweep.LANGS.index(l)] for l in low]) for row in per_seed]
        cell = _row(text.split('### Final MRR')[1], f'α={alpha}')[5]
        np.testing.assert_allclose([float(c) for c in cell.split(' ± ')],
                                   [np.mean(lows), np.std(lows, ddof=1)], atol=5e-4 + 1e-5)
  assert 'low-resource languages de, th' in text
  assert _row(text.split('### Final MRR')[1], 'zero-shot')[-1] == '–'


def test_a_sweep_without_the_alpha_keys_gets_none_of_its_sections(summaries, tmp_path):
  runs = report.Runs(*report.load(summaries))
  text = report.render(runs, 'runs', 'out.md', tmp_path, 'results')
  for absent in ('Steps to threshold', 'MRR per language', 'Final MRR', 'against', '†'):
    assert absent not in text
  assert _row(text, 'X-X-mono')[0] == 'X-X-mono'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['toy_curves.png', 'toy_langmix.png',
                                                         'toy_map.png']


CLUSTER_LANGS, CLUSTER_SEEN = ('en', 'de', 'es', 'zh', 'th'), ('en', 'de', 'es', 'zh')


def cluster_summary(arm: str, seed, overrides: dict, saved=None) -> dict:
  """A hand-made summary with random pair mAP over CLUSTER_LANGS (th unseen in training)."""
  rng = np.random.default_rng([len(arm), 0 if seed is None else seed + 1])
  return {'sweep': 'clu', 'direction': 'mlqa_to_xquad', 'arm': arm, 'seed': seed,
          'benchmark': 'xquad_r', 'train_data': 'mlqa_r', 'langs': list(CLUSTER_LANGS),
          'groups': {'all': list(CLUSTER_LANGS), 'seen': list(CLUSTER_SEEN), 'unseen': ['th']},
          'overrides': overrides, 'lang_clusters': saved,
          'pairs': {f'{x}-{y}': {'ap': float(rng.uniform(0.2, 0.9))}
                    for x in CLUSTER_LANGS for y in CLUSTER_LANGS}}


def test_cluster_table_against_numpy():
  model = {'en': 'c0', 'es': 'c0', 'de': 'c1', 'zh': 'c1'}
  arms = {'hybrid': {}, 'hybrid_latin': {'train.lang_clusters': 'latin:en,de,es;han:zh'},
          'hybrid_model': {'train.lang_clusters': 'model'}}
  summaries = [cluster_summary(report.ZERO_SHOT, None, {})] + [
      cluster_summary(arm, seed, overrides,
                      {'source': 'model', 'clusters': model} if arm == 'hybrid_model' else None)
      for arm, overrides in arms.items() for seed in range(3)]
  runs = report.Runs({'name': 'clu', 'arms': arms}, summaries)
  text = report.table_clusters(runs)
  blocks = text.split('**XQuAD-R')[1:]
  assert len(blocks) == 2 and '`han:zh;latin:de,en,es`' in blocks[0] and 'c0:en,es' in blocks[1]
  for block, clusters in zip(blocks, ({'en': 'l', 'de': 'l', 'es': 'l', 'zh': 'h'}, model)):
    def figures(s):  # within, across, unseen, by hand
      cells = {'within': [], 'across': [], 'unseen': []}
      for x in CLUSTER_LANGS:
        for y in CLUSTER_LANGS:
          if x != y:
            kind = ('unseen' if 'th' in (x, y) else
                    'within' if clusters[x] == clusters[y] else 'across')
            cells[kind].append(s['pairs'][f'{x}-{y}']['ap'])
      return [np.mean(cells[k]) for k in ('within', 'across', 'unseen')]
    n_within = sum(clusters[x] == clusters[y] for x in CLUSTER_SEEN for y in CLUSTER_SEEN
                   if x != y)
    assert f'within a cluster ({n_within} pairs)' in block
    assert f'across clusters ({12 - n_within} pairs)' in block
    assert 'with an unseen language (8 pairs)' in block
    for arm in arms:
      values = np.array([figures(s) for s in summaries if s['arm'] == arm])
      want = [report.fmt(np.mean(v), np.std(v, ddof=1)) for v in values.T]
      diff = values[:, 0] - values[:, 1]
      want.append(report.fmt(np.mean(diff), np.std(diff, ddof=1)))
      assert _row(block, report.arm_label(runs.spec, arm))[1:] == want + ['3'], arm
    zero = figures(summaries[0])
    assert _row(block, 'zero-shot')[1:4] == [report.fmt(v) for v in zero]
  # No arm with clusters (or a 'model' arm without its clusters.json): no table.
  plain = report.Runs({'name': 'clu', 'arms': {'hybrid': {}}},
                      [s for s in summaries if s['arm'] == 'hybrid'])
  assert report.table_clusters(plain) == ''
  assert report.run_clusters(cluster_summary('m', 0, {'train.lang_clusters': 'model'})) is None


def test_cluster_section_is_rendered_for_a_sweep_with_clusters(tmp_path):
  spec = test_sweep.spec(name='clu', arms={
      'hybrid': {'train.strategy': 'hybrid'},
      'hybrid_family': {'train.strategy': 'hybrid', 'train.lang_clusters': 'family'}},
      seeds=(0,), contrasts=())
  sweep_lib.run_sweep(spec, tmp_path / 'runs', tmp_path / 'summaries',
                      run_fn=test_sweep.fake_run, log=lambda _: None)
  text = report.render(report.Runs(*report.load(tmp_path / 'summaries')), 'runs', 'out.md',
                       tmp_path, 'results')
  section = text.split('### Cross-lingual pairs within and across language clusters')[1]
  assert 'within a cluster (2 pairs)' in section  # en-de, de-en: both indo-european
  assert 'with an unseen language (4 pairs)' in section


def test_directions_with_one_benchmark_are_told_apart(summaries, tmp_path):
  """A sweep over models (configs/sweeps/capacity.py): each direction a model, one benchmark."""
  spec = test_sweep.spec(name='cap', seeds=(0,), contrasts=(('hybrid', 'x_y'),), directions={
      m: {'config': 'configs/xquad.py', 'data.train': 'mlqa_r'} for m in ('small', 'base')})
  sweep_lib.run_sweep(spec, tmp_path / 'runs', tmp_path / 'summaries',
                      run_fn=test_sweep.fake_run, log=lambda _: None)
  runs = report.Runs(*report.load(tmp_path / 'summaries'))
  assert runs.label('base') == 'XQuAD-R (trained on MLQA-R), base'
  assert '| strategy | small mono | small cross | small multi | base mono |' in report.table_one(
      runs)
  assert _row(report.table_tests(runs), 'base')[1] == 'hybrid − X-Y'
  # One direction per benchmark: the labels stay as they were.
  one = report.Runs(*report.load(summaries))
  assert one.column('mlqa_to_xquad') == 'XQuAD-R'
  assert one.label('mlqa_to_xquad') == 'XQuAD-R (trained on MLQA-R)'


def test_header_names_the_code_of_the_runs_and_warns_when_it_differs(summaries, tmp_path):
  out = tmp_path / 'results.md'
  report.write_report(summaries, out)
  text = out.read_text()
  line = next(l for l in text.splitlines() if l.startswith('- Code:'))
  assert 'every trained run at commit' in line
  mixed = [{'commit': 'a' * 40}, {'commit': 'a' * 40}, {'commit': 'b' * 40}]
  said = report.code_versions(mixed)
  assert '2 commits' in said and '`aaaaaaaaaaaa` (2 runs)' in said and '`bbbbbbbbbbbb` (1 run)' in said
  assert 'confounds' in said


def _report_cli(*flags):
  return subprocess.run([sys.executable, '-m', 'hbt.experiments.report', *flags],
                        cwd=test_sweep.REPO, capture_output=True, text=True, timeout=300,
                        check=False)


def test_cli_builds_the_report_from_summaries(summaries, tmp_path):
  """python -m hbt.experiments.report --runs --out writes the report write_report writes; a
  folder without summaries is one error line and status 2."""
  out = tmp_path / 'docs' / 'results.md'
  result = _report_cli(f'--runs={summaries}', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == f'wrote {out}'
  text = out.read_text()
  assert '<!-- begin sweep toy -->' in text and 'hybrid beat X-X-mono' in text
  assert list((tmp_path / 'docs' / 'results').glob('*.png'))
  report.write_report(summaries, out)  # in process, over the CLI's: the same document
  assert out.read_text() == text
  (tmp_path / 'empty').mkdir()
  result = _report_cli(f'--runs={tmp_path / "empty"}', f'--out={tmp_path / "x.md"}')
  assert result.returncode == 2
  assert result.stderr.splitlines()[-1] == (
      f'error: {tmp_path / "empty"}: no run summaries (*.json.gz)')
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.md').exists()


def test_training_terms_table_by_hand(tmp_path):
  """The first and last logged value of each training term per arm (mean over seeds, std of the
  last), InfoNCE from train/loss where it is the only term, and the discriminator's chance."""
  spec = test_sweep.spec(name='terms', arms={
      'hybrid': {'train.strategy': 'hybrid'},
      'hybrid_dann': {'train.strategy': 'hybrid', 'train.adversarial.weight': 0.1}},
      seeds=(0, 1), contrasts=())

  def curves(arm, seed):
    if seed is None:  # zero-shot: fake_run writes no curves
      return None
    rows = [{'step': 0, 'val/loss': 9.0}]
    for step in (10, 20):
      v = step / 10 + seed + (0.5 if arm == 'hybrid_dann' else 0.0)
      row = {'step': step, 'train/loss': v}
      if arm == 'hybrid_dann':
        row.update({'train/info_nce': v - 0.25, 'train/adversarial_loss': 2 * v,
                    'train/adversarial_accuracy': 0.1 * v, 'train/adversarial_lambda': step / 40})
      rows.append(row)
    return rows

  def run_fn(spec_, run, workdir):
    return test_sweep.fake_run(spec_, run, workdir, curves=curves(run['arm'], run['seed']))

  sweep_lib.run_sweep(spec, tmp_path / 'runs', tmp_path / 'summaries', run_fn=run_fn,
                      log=lambda _: None)
  runs = report.Runs(*report.load(tmp_path / 'summaries'))
  text = report.table_terms(runs)
  head = _row(text, 'strategy')
  assert head == ['strategy', 'InfoNCE', 'discriminator loss', 'discriminator accuracy', 'lambda',
                  'chance', 'seeds']
  f = lambda first, lasts: f'{report.fmt(first)} -> {report.fmt(np.mean(lasts), np.std(lasts, ddof=1))}'
  # hybrid: train/loss 1 + seed at step 10, 2 + seed at step 20, seeds 0 and 1.
  assert _row(text, report.arm_label(runs.spec, 'hybrid'))[1:] == [f(1.5, [2, 3]), '–', '–', '–', '–', '2']
  # fake_run's batches: queries en 3, de 5; positives en 3, th 5: of the 16 texts, en 6.
  dann = _row(text, report.arm_label(runs.spec, 'hybrid_dann'))
  assert dann[1:] == [f(1.75, [2.25, 3.25]), f(4.0, [5.0, 7.0]), f(0.2, [0.25, 0.35]),
                      f(0.25, [0.5, 0.5]), report.fmt(6 / 16), '2']
  section = report.render(runs, 'runs', 'out.md', tmp_path, 'results')
  assert '### Training terms (first -> last log)' in section and text in section
  # A sweep whose arms train InfoNCE alone gets no such table.
  assert report.table_terms(report.Runs(runs.spec, runs.get('mlqa_to_xquad', 'hybrid'))) == ''
