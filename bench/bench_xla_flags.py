"""XLA CPU flags against the default: a 2-layer mE5-small-shaped encoder under each XLA_FLAGS.

Each flag setting runs in its own child process (XLA reads XLA_FLAGS once): forward and
forward+backward of a [--batch, --length]-token batch ([32, 128] by default), in --dtype (bf16 by
default), best of --repeats after compiling. --flags picks a subset of the settings ('default' is
no flag; a setting may join several flags with spaces). The BUILD.md section "Where the time goes"
quotes runs (bf16 on an AVX512-BF16 CPU, f32 on an AVX2-only one) and why hbt sets no flag.

  python bench/bench_xla_flags.py [--repeats 12] [--rounds 2] [--batch 32] [--length 128]
      [--dtype float32] [--flags=default,--xla_cpu_use_onednn=true]
"""

import argparse
import os
import pathlib
import sys
import time

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (bench/common.py)

FLAGS = ('', '--xla_cpu_use_thunk_runtime=false', '--xla_cpu_enable_fast_math=true',
         '--xla_cpu_use_onednn=true', '--xla_cpu_experimental_onednn_custom_call=true',
         '--xla_cpu_use_xnnpack=true', '--xla_cpu_prefer_vector_width=512',
         '--xla_cpu_experimental_ynn_fusion_type=',
         '--xla_cpu_experimental_ynn_fusion_type=-individual_dot')
DEFAULT = 'default'  # --flags' name of '' (no flag)


def child(args) -> None:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hbt.model import encoder  # pylint: disable=g-import-not-at-top
  arch = encoder.Arch(vocab_size=1000, hidden=384, layers=2, heads=12, mlp=1536,
                      max_positions=514, type_vocab_size=1, position_offset=2,
                      layer_norm_eps=1e-12, pad_id=1)
  module = encoder.Encoder(arch, dtype=jnp.dtype(args.dtype))
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 1000, size=(args.batch, args.length)), jnp.int32)
  mask = jnp.ones_like(ids)
  params = jax.jit(lambda: nn.unbox(module.init(jax.random.key(0), ids, mask))['params'])()
  weights = jnp.asarray(rng.normal(size=(args.batch, 384)), jnp.float32)
  fns = {'fwd': jax.jit(lambda p: module.apply({'params': p}, ids, mask)),
         'grad': jax.jit(jax.grad(lambda p: jnp.sum(module.apply({'params': p}, ids, mask)
                                                    * weights)))}
  out = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn(params))
    best = float('inf')
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(params))
      best = min(best, time.perf_counter() - start)
    out[name] = best
  common.report({**out, 'load': common.load()})


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repeats', type=int, default=12)
  parser.add_argument('--rounds', type=int, default=2, help='passes over the flag list')
  parser.add_argument('--batch', type=int, default=32, help='texts per batch')
  parser.add_argument('--length', type=int, default=128, help='tokens per text')
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'),
                      help="the encoder's matmul input dtype")
  parser.add_argument('--flags', default=','.join(f or DEFAULT for f in FLAGS),
                      help=f"comma-separated settings, each one or more space-separated flags from "
                           f"the list, '{DEFAULT}' for none; pass as --flags=... (the values start "
                           'with --)')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return 0
  chosen = ['' if f == DEFAULT else f for f in args.flags.split(',')]
  unknown = [f for f in chosen if any(part not in FLAGS for part in f.split())]
  if unknown:
    parser.error(f'unknown --flags {unknown}; choose from {[f or DEFAULT for f in FLAGS]}')
  print(common.machine_header(), flush=True)
  print(f'2-layer mE5-small-shaped encoder, {args.dtype}, [{args.batch}, {args.length}] tokens, '
        f'best of {args.repeats}; one child process per setting', flush=True)
  passthrough = ['--child', '--repeats', str(args.repeats), '--batch', str(args.batch),
                 '--length', str(args.length), '--dtype', args.dtype]
  for _ in range(args.rounds):
    for flags in chosen:
      r = common.run_child(__file__, passthrough, env={**os.environ, 'XLA_FLAGS': flags})
      if 'error' in r:
        print(f'{flags or "(default)":50s} failed: {r["error"]}', flush=True)
        continue
      print(f'{flags or "(default)":50s} forward {r["fwd"] * 1e3:7.1f} ms, forward+backward '
            f'{r["grad"] * 1e3:7.1f} ms (load {r["load"]:.1f})', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
