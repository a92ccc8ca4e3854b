"""The paper's Table 1 at this machine's scale: hybrid batches against the four baselines.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/strategies.py --workdir=runs/strategies
  python -m hbt.experiments.report --runs=docs/results/runs/strategies --out=docs/results.md

Budget, sized for a 2-core CPU without AMX (measured there: 150 steps of 32 MLQA-R pairs took
684 s, a full XQuAD-R evaluation about 4 to 10 minutes depending on load): every run trains
100 steps of 32 pairs (3,200 pairs, warmup 10) and is evaluated on every language of the other
benchmark. Expected per run, on a quiet machine: ~8 min training + ~5 min evaluation + ~1 min of
process start-up, ~14 min; 2 zero-shot evaluations + 5 arms x 2 directions x 3 seeds = 32 jobs,
~7 hours in all: the sweep is resumed across sessions from the committed summaries.
"""


def get_sweep():
  return {
      'name': 'strategies',
      'config': 'configs/default.py',
      # eval.trec_depth 0: no TREC files (623 MB per XQuAD-R evaluation); per-query AP suffices.
      'budget': {'train.steps': 100, 'train.batch_size': 32, 'train.warmup_steps': 10,
                 'train.checkpoint_every': 25, 'eval.progress': False, 'eval.trec_depth': 0},
      # Every language of the evaluation benchmark (the configs' default).
      'directions': {
          'mlqa_to_xquad': {'config': 'configs/xquad.py'},  # train on MLQA-R, evaluate on XQuAD-R
          'xquad_to_mlqa': {'config': 'configs/mlqa.py'},  # train on XQuAD-R, evaluate on MLQA-R
      },
      'arms': {
          'x_x_mono': {'train.strategy': 'x_x_mono'},
          'x_y': {'train.strategy': 'x_y'},
          'x_x': {'train.strategy': 'x_x'},
          'en_en': {'train.strategy': 'en_en'},
          'hybrid': {'train.strategy': 'hybrid', 'train.alpha': 0.5},
      },
      'seeds': (0, 1, 2),
      'contrasts': (('hybrid', 'x_x_mono'), ('hybrid', 'x_y'), ('hybrid', 'x_x'),
                    ('hybrid', 'en_en')),
  }
