"""The paper's sensitivity study of alpha (0.5 best, stable for 0.4-0.6), at the budget of
configs/sweeps/strategies.py: hybrid batches with alpha 0.0 (all cross-lingual) to 1.0 (all
monolingual), trained on MLQA-R and evaluated on XQuAD-R.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/alpha.py --workdir=runs/alpha
  python -m hbt.experiments.report --runs=docs/results/runs/alpha --out=docs/results.md
"""

from configs.sweeps import strategies


def get_sweep():
  base = strategies.get_sweep()
  alphas = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
  name = lambda a: f'alpha{a:.1f}'.replace('.', '_')  # arm names hold no '.'
  return {
      'name': 'alpha',
      'config': base['config'],
      'budget': base['budget'],
      'directions': {'mlqa_to_xquad': base['directions']['mlqa_to_xquad']},
      'arms': {name(a): {'train.strategy': 'hybrid', 'train.alpha': a} for a in alphas},
      'seeds': base['seeds'],
      'contrasts': tuple((name(0.5), name(a)) for a in alphas if a != 0.5),
  }
