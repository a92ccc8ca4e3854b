"""Issue 7 section 1: how does alpha (the share of monolingual batches) change convergence speed
and final MRR, especially for low-resource languages? Hybrid batches with alpha 0.0 (all
cross-lingual) to 1.0 (all monolingual) in steps of 0.1, at the budget and seeds of
configs/sweeps/strategies_t0_01.py (100 steps of 32 pairs, seeds 0, 1, 2), trained on MLQA-R and
evaluated on every XQuAD-R language. The one change to that budget: the validation evaluators
(val: loss, val_map: mono / cross / multi mAP and MRR on the held-out MLQA-R ids) run every 10
steps instead of 50, for the convergence curves. Evaluators do not change the training, so arm
alpha0_5 trains as strategies_t0_01's hybrid arm does; it is run again for its denser curve.

The report (hbt.experiments.report) plots the curves per alpha, gives the steps to reach
start + 0.9 x (best final - start) of each validation curve, the final MRR per language with
the low-resource languages marked, and the final figures against alpha.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/alpha.py --workdir=runs/alpha
  python -m hbt.experiments.report --runs=docs/results/runs/alpha --out=docs/results.md
"""

from configs.sweeps import strategies_t0_01

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0
EVAL_EVERY = 10  # Steps between validation evaluations (the default config's is 50).
LOW_RESOURCE = ('hi', 'th', 'vi', 'el', 'tr')  # Issue 7's low-resource languages.


def arm(alpha: float) -> str:
  """The arm of an alpha: 'alpha0_5' (arm names hold no '.')."""
  return f'alpha{alpha:.1f}'.replace('.', '_')


def get_sweep():
  base = strategies_t0_01.get_sweep()
  return {
      'name': 'alpha',
      'config': base['config'],
      'budget': {**base['budget'], 'evals.val.every': EVAL_EVERY,
                 'evals.val_map.every': EVAL_EVERY},
      'directions': {'mlqa_to_xquad': base['directions']['mlqa_to_xquad']},
      'arms': {arm(a): {'train.strategy': 'hybrid', 'train.alpha': a} for a in ALPHAS},
      'seeds': base['seeds'],
      'contrasts': tuple((arm(0.5), arm(a)) for a in ALPHAS if a != 0.5),
      'x_axis': 'train.alpha',
      'threshold': 0.9,
      'low_resource': LOW_RESOURCE,
  }
