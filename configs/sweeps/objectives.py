"""Issue 7 section 4: do more alignment terms help hybrid batches? An ablation over the extra
terms, each alone and all together, at the budget of configs/sweeps/strategies_t0_01.py (trained on
MLQA-R, evaluated on XQuAD-R, 3 seeds):

  hybrid             InfoNCE query -> positive only (the baseline)
  query_query        + 0.5 x query-to-query alignment between parallel translations
  passage_passage    + 0.5 x passage-to-passage alignment between parallel translations
  passage_query      + the passage -> query direction (config.train.symmetric_loss: the mean of
                       both directions)
  all                every term

The alignment terms act on the cross-lingual pairs of a batch (the query of the id in the
positive's language, the positive in the query's language: shards with 'query2' / 'positive2');
a monolingual batch gives them nothing. The weights are a first guess, not tuned.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/objectives.py --workdir=runs/objectives
  python -m hbt.experiments.report --runs=docs/results/runs/objectives --out=docs/results.md
"""

from configs.sweeps import strategies_t0_01

QUERY = {'train.parallel_query_weight': 0.5}
PASSAGE = {'train.parallel_passage_weight': 0.5}
SYMMETRIC = {'train.symmetric_loss': True}


def get_sweep():
  base = strategies_t0_01.get_sweep()
  hybrid = base['arms']['hybrid']
  arms = {'hybrid': hybrid,
          'query_query': {**hybrid, **QUERY},
          'passage_passage': {**hybrid, **PASSAGE},
          'passage_query': {**hybrid, **SYMMETRIC},
          'all': {**hybrid, **QUERY, **PASSAGE, **SYMMETRIC}}
  return {
      'name': 'objectives',
      'config': base['config'],
      'budget': base['budget'],
      'directions': {'mlqa_to_xquad': base['directions']['mlqa_to_xquad']},
      'arms': arms,
      'seeds': base['seeds'],
      'contrasts': tuple(('hybrid', arm) for arm in arms if arm != 'hybrid'),
  }
