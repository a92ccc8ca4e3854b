"""Train with hybrid batches on MLQA-R and evaluate zero-shot on XQuAD-R (the default job)."""

from configs import default


def get_config():
  """XQuAD-R evaluation; the training set-up is the default one."""
  config = default.get_config()
  config.eval.benchmark = 'xquad_r'
  return config
