"""Helpers shared by the config files (big_vision's configs/common.py)."""

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """The variant argument of `get_config(arg)`, e.g. 'eval=mlqa_r', over its defaults.

  `--config=configs/default.py:eval=mlqa_r` passes 'eval=mlqa_r' to get_config. The argument is
  comma-separated `key=value` items (a bare `key` means key=True); each value is cast to the type
  of its default.

  Raises:
    ValueError: a key without a default, or a value that does not cast (names the key).
  """
  out = ml_collections.ConfigDict(defaults)
  for item in (arg or '').split(','):
    if not item.strip():
      continue
    key, sep, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'config argument {key!r} is unknown; known: {", ".join(sorted(defaults))}')
    kind = type(defaults[key])
    if kind is bool:
      if sep and value.strip().lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {key}={value!r} must be true or false')
      out[key] = not sep or value.strip().lower() in ('true', '1')
    else:
      try:
        out[key] = kind(value.strip())
      except ValueError as e:
        raise ValueError(f'config argument {key}={value!r} must be a {kind.__name__}') from e
  return out
