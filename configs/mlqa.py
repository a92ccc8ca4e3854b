"""Zero-shot evaluation on MLQA-R, training on XQuAD-R: configs/default.py:eval=mlqa_r."""

from configs import default


def get_config(arg=None):
  """default.get_config('eval=mlqa_r'), kept for the commands and scripts that name this file."""
  return default.get_config(','.join(filter(None, ['eval=mlqa_r', arg])))
