"""XLA CPU flags against the default: a 2-layer mE5-small-shaped encoder under each XLA_FLAGS.

Each flag setting runs in its own child process (XLA reads XLA_FLAGS once): forward and
forward+backward of a [32, 128]-token batch, bf16, best of --repeats after compiling. The BUILD.md
section "Where the time goes" quotes a run and why hbt sets no flag.

  python bench/bench_xla_flags.py [--repeats 12] [--rounds 2]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

FLAGS = ('', '--xla_cpu_use_thunk_runtime=false', '--xla_cpu_enable_fast_math=true',
         '--xla_cpu_use_onednn=true', '--xla_cpu_experimental_onednn_custom_call=true',
         '--xla_cpu_use_xnnpack=true', '--xla_cpu_prefer_vector_width=512',
         '--xla_cpu_experimental_ynn_fusion_type=')


def child(repeats: int) -> None:
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hbt.model import encoder  # pylint: disable=g-import-not-at-top
  arch = encoder.Arch(vocab_size=1000, hidden=384, layers=2, heads=12, mlp=1536,
                      max_positions=514, type_vocab_size=1, position_offset=2,
                      layer_norm_eps=1e-12, pad_id=1)
  module = encoder.Encoder(arch, dtype=jnp.bfloat16)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 1000, size=(32, 128)), jnp.int32)
  mask = jnp.ones_like(ids)
  params = jax.jit(lambda: nn.unbox(module.init(jax.random.key(0), ids, mask))['params'])()
  weights = jnp.asarray(rng.normal(size=(32, 384)), jnp.float32)
  fns = {'fwd': jax.jit(lambda p: module.apply({'params': p}, ids, mask)),
         'grad': jax.jit(jax.grad(lambda p: jnp.sum(module.apply({'params': p}, ids, mask)
                                                    * weights)))}
  out = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn(params))
    best = float('inf')
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(params))
      best = min(best, time.perf_counter() - start)
    out[name] = best
  print(json.dumps({**out, 'load': os.getloadavg()[0]}), flush=True)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repeats', type=int, default=12)
  parser.add_argument('--rounds', type=int, default=2, help='passes over the flag list')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args.repeats)
    return 0
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import common  # pylint: disable=g-import-not-at-top
  print(common.machine_header(), flush=True)
  for _ in range(args.rounds):
    for flags in FLAGS:
      proc = subprocess.run([sys.executable, __file__, '--child', '--repeats', str(args.repeats)],
                            env={**os.environ, 'XLA_FLAGS': flags}, capture_output=True,
                            text=True, check=False)
      lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
      if not lines:
        print(f'{flags or "(default)":50s} failed: {proc.stderr[-300:]}', flush=True)
        continue
      r = json.loads(lines[-1])
      print(f'{flags or "(default)":50s} forward {r["fwd"] * 1e3:7.0f} ms, forward+backward '
            f'{r["grad"] * 1e3:7.0f} ms (load {r["load"]:.1f})', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
