"""The results report, rendered from small synthetic summaries that the test writes."""

import re

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
      arms={a: {'train.strategy': 'hybrid' if a == 'hybrid_twin' else a}
            for a in (*test_sweep.ARMS, 'hybrid_twin')},
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
  zero = summary_lib.read(summaries / 'mlqa_to_xquad.zero_shot.json.gz')
  assert _row(text, 'zero-shot')[1] == report.fmt(zero['summary']['all']['mono']['ap'])
  # Per-language tables: the unseen language last and marked; the language mix from the counts.
  assert '| strategy | en | de | th* |' in text
  assert _row(text.split('### Language mix')[1], 'X-Y')[2:4] == ['75%', '75%']
  assert _row(text.split('### Language mix')[1], 'X-Y')[5] == '0.8'  # false negatives / batch
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
  headline = text.split('### Headline (computed)')[1].split('###')[0]
  assert 'hybrid (α' not in headline  # the toy arms carry no alpha override
  assert ('hybrid beat X-X-mono (higher in: mono, cross, multi; lower in: none; seeds 3 and 3)'
          in headline)
  assert 'hybrid did not differ significantly from hybrid_twin' in headline


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


@pytest.mark.parametrize('diff, p, noise, word', [
    (0.02, 0.001, 0.005, 'higher; seed-to-seed std .005'),
    (-0.02, 0.001, float('nan'), 'lower; seed noise unknown (one seed)'),
    (0.004, 0.001, 0.005, 'significant over questions but within the seed noise'),
    (0.02, 0.2, 0.005, 'no significant difference'),
    (0.02, None, 0.005, 'untested'),
])
def test_verdict_weighs_the_test_and_the_seed_noise(diff, p, noise, word):
  c = {'diff': diff, 'p_value': p, 'noise': noise}
  assert report.verdict(c).startswith(word)
  assert report.decisive(c, 1 if diff > 0 else -1) == word.startswith(('higher', 'lower'))
