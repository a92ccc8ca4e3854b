"""Zero-shot evaluation on MLQA-R (training on XQuAD-R, so that evaluation stays zero-shot)."""

from configs import default


def get_config():
  """MLQA-R evaluation; trains on XQuAD-R pairs when training."""
  config = default.get_config()
  config.eval.benchmark = 'mlqa_r'
  config.data.train = 'xquad_r'
  return config
