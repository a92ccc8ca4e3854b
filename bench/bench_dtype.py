"""Is bf16 fast here? XLA's bf16 dot (bf16 inputs, f32 accumulation) against the f32 dot.

Times the matmuls of a multilingual-e5-small layer on 4096 tokens (the forward x @ W, the backward
dx = g @ W^T and the weight gradient dW = x^T @ g, which contracts over the tokens) and an
attention score matmul, in both dtypes, interleaved, best of --repeats. hbt/model/dtype.py's
'auto' rule (bf16 with AMX or AVX512-BF16) rests on this measurement.

  python bench/bench_dtype.py [--repeats 20]
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ''):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  pylint: disable=g-import-not-at-top


def _dot(dims):
  return jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32))


CASES = (  # name, lhs shape, rhs shape, dimension numbers
    ('x @ W        [4096,384]x[384,1536]', (4096, 384), (384, 1536), (((1,), (0,)), ((), ()))),
    ('x @ W        [4096,1536]x[1536,384]', (4096, 1536), (1536, 384), (((1,), (0,)), ((), ()))),
    ('dx = g @ W^T [4096,1536]x[384,1536]', (4096, 1536), (384, 1536), (((1,), (1,)), ((), ()))),
    ('dW = x^T @ g [4096,384]x[4096,1536]', (4096, 384), (4096, 1536), (((0,), (0,)), ((), ()))),
    ('q @ k^T      [384,128,32] batched', (384, 128, 32), (384, 128, 32),
     (((2,), (2,)), ((0,), (0,)))),
)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  print(common.machine_header(), flush=True)
  rng = np.random.default_rng(0)
  for name, a_shape, b_shape, dims in CASES:
    fn = _dot(dims)
    args_by = {dt: (jnp.asarray(rng.normal(size=a_shape), dt),
                    jnp.asarray(rng.normal(size=b_shape), dt))
               for dt in (jnp.float32, jnp.bfloat16)}
    best = {dt: float('inf') for dt in args_by}
    for dt, xs in args_by.items():
      jax.block_until_ready(fn(*xs))
    for _ in range(args.repeats):
      for dt, xs in args_by.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*xs))
        best[dt] = min(best[dt], time.perf_counter() - start)
    f32, bf16 = best[jnp.float32], best[jnp.bfloat16]
    print(f'{name}: f32 {f32 * 1e3:7.2f} ms, bf16 {bf16 * 1e3:7.2f} ms, bf16 speed-up '
          f'{f32 / bf16:.2f}x (load {common.load():.1f})', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
