"""Issue 7 section 3: is a language discriminator trained through gradient reversal (DANN) a match
for hybrid batches? At the budget of configs/sweeps/strategies_t0_01.py (trained on MLQA-R, evaluated on
XQuAD-R, mono / cross / multi all reported, 3 seeds):

  hybrid        hybrid batches, no discriminator (the method)
  x_x_mono      monolingual batches, no discriminator
  x_x_mono_dann monolingual batches + the discriminator: alignment from the adversary alone
  x_y_dann      cross-lingual batches + the discriminator
  hybrid_dann   hybrid batches + the discriminator

Discriminator: linear over the pooled query and positive embeddings, loss weight 0.1, lambda on
the DANN schedule 2 / (1 + exp(-10 p)) - 1 up to 1.0 (hbt/train/adversarial.py), its learning
rate 100 x the encoder's (peak 3e-3). At the encoder's 3e-5, Adam moves each of its weights by
at most about the learning rate a step, 1.5e-3 over the 100 steps (the schedule's sum), against
an initial kernel std of 0.05: a run at commit fb4876d (x_x_mono_dann, seed 0, multiplier 1)
logged its accuracy at 0.0 to 0.3 % (chance ~17 %) and its loss at 4.5, that of a uniform guess
over its 92 classes (ln 92 = 4.52), from the first log to the last: it never learned to tell the
languages apart, so it was no adversary. 100 is a first guess, not tuned.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/adversarial.py --workdir=runs/adversarial
  python -m hbt.experiments.report --runs=docs/results/runs/adversarial --out=docs/results.md
"""

from configs.sweeps import strategies_t0_01

DANN = {'train.adversarial.weight': 0.1, 'train.adversarial.schedule': 'dann',
        'train.adversarial.lambda_max': 1.0, 'train.adversarial.hidden': 0,
        'train.adversarial.lr_multiplier': 100.0}


def get_sweep():
  base = strategies_t0_01.get_sweep()
  arms = base['arms']
  return {
      'name': 'adversarial',
      'config': base['config'],
      'budget': base['budget'],
      'directions': {'mlqa_to_xquad': base['directions']['mlqa_to_xquad']},
      'arms': {'hybrid': arms['hybrid'], 'x_x_mono': arms['x_x_mono'],
               'x_x_mono_dann': {**arms['x_x_mono'], **DANN},
               'x_y_dann': {**arms['x_y'], **DANN},
               'hybrid_dann': {**arms['hybrid'], **DANN}},
      'seeds': base['seeds'],
      'contrasts': (('hybrid', 'hybrid_dann'), ('hybrid', 'x_x_mono_dann'),
                    ('hybrid', 'x_y_dann'), ('x_x_mono', 'x_x_mono_dann')),
  }
