"""The paper's Table 1 at this machine's scale: hybrid batches against the four baselines.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/strategies_t0_01.py --workdir=runs/strategies_t0_01
  python -m hbt.experiments.report --runs=docs/results/runs/strategies_t0_01 --out=docs/results.md

X-X-mono, X-Y, X-X, En-En and hybrid (alpha 0.5) at the budget of configs/sweeps/strategies.py
(100 steps of 32 pairs, warmup 10, seeds 0, 1, 2) and the default InfoNCE temperature, 0.01
(multilingual-E5's own; at 0.05 every arm lost monolingual mAP: configs/sweeps/strategies.py), in
two directions: train on MLQA-R and evaluate on all 11 XQuAD-R languages, and train on XQuAD-R and
evaluate on all 7 MLQA-R languages. 2 zero-shot evaluations + 5 arms x 2 directions x 3 seeds = 32
jobs at about 10 min each on the 2-core CPU: the sweep resumes across sessions from the committed
summaries.
"""

from configs.sweeps import strategies

TEMPERATURE = 0.01  # configs/default.py's; stated here so that the sweep keeps it if that changes


def get_sweep():
  base = strategies.get_sweep()
  return {
      **base,
      'name': 'strategies_t0_01',
      'budget': {**base['budget'], 'train.loss_temperature': TEMPERATURE},
      'directions': {
          'mlqa_to_xquad': {'config': 'configs/xquad.py'},  # train on MLQA-R, evaluate on XQuAD-R
          'xquad_to_mlqa': {'config': 'configs/mlqa.py'},  # train on XQuAD-R, evaluate on MLQA-R
      },
  }
