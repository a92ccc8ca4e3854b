"""Zero-shot evaluation on XQuAD-R, training on MLQA-R: configs/default.py:eval=xquad_r."""

from configs import default


def get_config(arg=None):
  """default.get_config('eval=xquad_r'), kept for the commands and scripts that name this file."""
  return default.get_config(','.join(filter(None, ['eval=xquad_r', arg])))
