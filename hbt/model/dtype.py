"""The matmul input dtype: 'auto' picks bfloat16 where the hardware has fast bf16 matmuls.

bf16 inputs with f32 accumulation pay off on GPUs and TPUs, on CPUs with AMX (Sapphire Rapids and
newer), and on CPUs with AVX512-BF16 (measured on an AMD EPYC with avx512_bf16 and no AMX: XLA's
bf16 dot [4096, 384] x [384, 1536] with f32 accumulation ran 1.7x to 2.5x the f32 dot; the
weight-gradient dot, which contracts over the token axis, ran 0.75x to 1.0x; see BUILD.md). Without
either, bf16 is emulated and slower than f32 (on Ice Lake, as issue 8 reports: bf16 train step
0.79x, encoding 0.82x of f32), so 'auto' picks float32 there.
"""

import logging

import jax

DTYPES = ('auto', 'float32', 'bfloat16')
FAST_BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset[str]:
  """The flags of the first CPU in `path` (empty if it cannot be read, e.g. not Linux)."""
  try:
    with open(path, encoding='utf-8') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.partition(':')[2].split())
  except OSError:
    pass
  return frozenset()


def auto_dtype(platform: str, flags: frozenset[str] | set[str]) -> str:
  """'bfloat16' on an accelerator or a CPU with AMX or AVX512-BF16 `flags`, else 'float32'."""
  if platform != 'cpu':
    return 'bfloat16'
  return 'bfloat16' if any(f in flags for f in FAST_BF16_CPU_FLAGS) else 'float32'


def resolve(name: str, platform: str | None = None, flags: frozenset[str] | None = None) -> str:
  """`name` ('auto', 'float32' or 'bfloat16') as a concrete dtype name, logged once decided.

  Args:
    name: config.model.dtype.
    platform: the JAX backend ('cpu', 'gpu', 'tpu'); default jax.default_backend().
    flags: the CPU flags; default those of /proc/cpuinfo.
  """
  if name not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {", ".join(DTYPES)}, got {name!r}')
  if name != 'auto':
    return name
  platform = jax.default_backend() if platform is None else platform
  flags = cpu_flags() if flags is None else flags
  chosen = auto_dtype(platform, flags)
  fast = sorted(f for f in FAST_BF16_CPU_FLAGS if f in flags)
  logging.info("config.model.dtype='auto' -> %s (backend %s, CPU bf16 flags: %s)", chosen,
               platform, ', '.join(fast) or 'none')
  return chosen
