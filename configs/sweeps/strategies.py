"""The paper's Table 1 at this machine's scale, at temperature 0.05: hybrid against four baselines.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/strategies.py --workdir=runs/strategies
  python -m hbt.experiments.report --runs=docs/results/runs/strategies --out=docs/results.md

The first strategy comparison, run at commit eb61407 when hbt's default InfoNCE temperature was
0.05: every arm then lost monolingual mAP (.800 zero-shot to .755-.776), and temperature 0.01 kept
it (configs/sweeps/mono_target.py), so 0.01 became the default and configs/sweeps/
strategies_t0_01.py is the comparison at it, in both directions. This sweep keeps its temperature
explicitly, and its one direction (train on MLQA-R, evaluate on XQuAD-R), 3 seeds.

Budget, sized for a 2-core CPU: every run trains 100 steps of 32 pairs (3,200 pairs, warmup 10) and
is evaluated on every language of the other benchmark: about 9.5 min per run on a quiet AMD EPYC
(6 min training, 3.5 min evaluation).
"""


def get_sweep():
  return {
      'name': 'strategies',
      'config': 'configs/default.py',
      # eval.trec_depth 0: no TREC files (623 MB per XQuAD-R evaluation); per-query AP suffices.
      'budget': {'train.steps': 100, 'train.batch_size': 32, 'train.warmup_steps': 10,
                 'train.loss_temperature': 0.05,
                 'train.checkpoint_every': 25, 'eval.progress': False, 'eval.trec_depth': 0},
      # Every language of the evaluation benchmark (the configs' default).
      'directions': {
          'mlqa_to_xquad': {'config': 'configs/xquad.py'},  # train on MLQA-R, evaluate on XQuAD-R
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
