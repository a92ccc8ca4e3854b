"""Issue 7 section 5: does the benefit of hybrid batches hold as the model grows? For accelerators.

Hybrid (alpha 0.5) against X-X-mono and X-Y for each hub model of configs/models.py that hbt
imports, trained on MLQA-R and evaluated on every XQuAD-R language (el ro ru th tr unseen in
training), 3 seeds; the pretrained model evaluated once per model. A "direction" of this sweep is a
model, so the report gives one table per model. The plan, its memory and its device-hours are in
docs/results.md, "Question 5: model capacity".

  python -m hbt.experiments.sweep --sweep=configs/sweeps/capacity.py --workdir=runs/capacity
  python -m hbt.experiments.report --runs=docs/results/runs/capacity --out=docs/results.md

Budget (the dry-run setting of docs/results.md): 1,000 steps of 128 pairs (128,000 pairs), warmup
100, queries up to 48 and passages up to 256 tokens, one text per row, the whole encoder trained
(embeddings too), bf16 matmuls on accelerators (dtype 'auto'); validation every 250 steps. Needs
the hub (weights are downloaded once) and an accelerator: it does not run on a CPU in any useful
time. XLM-R XL and XXL (xlmr_xl, xlmr_xxl) are left out: their weights do not import (pre-LN
model type); their dry runs work.
"""

MODELS = ('me5_small', 'me5_base', 'me5_large', 'xlmr_base', 'xlmr_large', 'labse', 'mbert')


def get_sweep():
  return {
      'name': 'capacity',
      'config': 'configs/default.py',
      'budget': {'train.steps': 1000, 'train.batch_size': 128, 'train.warmup_steps': 100,
                 'train.max_query_length': 48, 'train.max_passage_length': 256,
                 'train.pack_texts': 1, 'train.freeze_embeddings': False,
                 'train.checkpoint_every': 250, 'evals.val.every': 250,
                 'evals.val_map.every': 250, 'eval.progress': False, 'eval.trec_depth': 0},
      # configs/models.py:<model> is the default config (train MLQA-R, evaluate XQuAD-R) with the
      # model's hub id, pooling, prefixes and architecture.
      'directions': {m: {'config': f'configs/models.py:{m}'} for m in MODELS},
      'arms': {
          'x_x_mono': {'train.strategy': 'x_x_mono'},
          'x_y': {'train.strategy': 'x_y'},
          'hybrid': {'train.strategy': 'hybrid', 'train.alpha': 0.5},
      },
      'seeds': (0, 1, 2),
      'contrasts': (('hybrid', 'x_x_mono'), ('hybrid', 'x_y')),
  }
