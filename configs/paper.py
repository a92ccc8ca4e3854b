"""Paper-scale hybrid batch training (XLM-R base, global batch 128, alpha 0.5, lr 3e-5).

Needs a hub checkpoint (internet) or a local copy: --config.model.checkpoint=/path/to/xlm-roberta.
Sized for accelerators; on a CPU use configs/xquad.py.
"""

from configs import default


def get_config():
  """The paper's setting; training pairs from MLQA-R unless config.data.train names a JSONL."""
  config = default.get_config()
  config.model.source = 'hf'
  config.model.checkpoint = 'xlm-roberta-base'
  config.model.query_prefix = ''
  config.model.passage_prefix = ''
  config.model.dtype = 'bfloat16'
  config.train.batch_size = 128
  config.train.steps = 10_000
  config.train.warmup_steps = 1_000
  config.train.loss_temperature = 0.05
  config.train.freeze_embeddings = False
  config.train.max_passage_length = 256
  config.train.checkpoint_every = 1_000
  config.train.val_every = 500
  config.train.keep_checkpoints = 3
  config.train.log_every = 50
  config.eval.batch_tokens = 32_768
  return config
