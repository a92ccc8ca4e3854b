"""Model FLOPs utilisation (MFU) of hbt's train step and encoder on one accelerator (or the CPU).

MFU = model FLOPs per second / the device's peak bf16 FLOP/s. Model FLOPs are counted analytically
(`encoder_flops`: the matmuls of the layers, 2 FLOPs per multiply-add, attention included; a train
step is 3x the forward: forward, and the backward's two matmuls per forward matmul), and XLA's own
count from the compiled step's cost analysis is printed beside it. Shapes:

  e5-small   multilingual-e5-small (12 layers, hidden 384, mlp 1536, 12 heads);
  xlmr-large XLM-R large (24 layers, hidden 1024, mlp 4096, 16 heads);
  tiny       2 layers, hidden 64 (for tests on the CPU).

Engines (--engines): hbt's jitted train step and encoder ('hbt'; 'hbt_fused' with
config.model.attention='fused', cuDNN flash attention on a GPU), and the PyTorch peer of the same
shape, loss and optimizer ('torch_eager', 'torch_compile': transformers' XLMRobertaModel, SDPA
attention, bf16 autocast); the last lines give best hbt against best PyTorch.

with random weights, config.train.freeze_embeddings, --batch pairs of --query-length query tokens
and --passage-length passage tokens per train step (default 128, 64, 256), encoding [--batch,
--passage-length]. No padding: every token is real.

  python bench/bench_mfu.py --model xlmr-large                 # on a GPU / TPU
  python bench/bench_mfu.py --engines hbt,hbt_fused,torch_eager,torch_compile
  python bench/bench_mfu.py --platform cpu --model tiny --peak-tflops 1
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/common.py; it imports neither TensorFlow nor the data pipeline)

# Dense bf16 peak FLOP/s per device, by a substring of jax's device_kind.
PEAK_BF16 = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L4': 121e12,
             'TPU v5 lite': 197e12, 'TPU v5p': 459e12, 'TPU v4': 275e12}

SHAPES = {  # layers, hidden, heads, mlp, vocab
    'tiny': (2, 64, 4, 256, 1000),
    'e5-small': (12, 384, 12, 1536, 250037),
    'xlmr-large': (24, 1024, 16, 4096, 250002),
}


def arch_of(name: str):
  from hbt.model import encoder  # pylint: disable=g-import-not-at-top
  layers, hidden, heads, mlp, vocab = SHAPES[name]
  return encoder.Arch(vocab_size=vocab, hidden=hidden, layers=layers, heads=heads, mlp=mlp,
                      max_positions=514, type_vocab_size=1, position_offset=2,
                      layer_norm_eps=1e-5, pad_id=1)


def encoder_flops(arch, batch: int, length: int) -> float:
  """Forward FLOPs of the encoder's layers on [batch, length] tokens (matmuls only).

  Per layer and token: q, k, v, out projections 4 * 2 * H^2, MLP 2 * 2 * H * M, attention scores
  and context 2 * 2 * L * H.
  """
  h, m = arch.hidden, arch.mlp
  per_token = 8 * h * h + 4 * h * m + 4 * length * h
  return float(arch.layers * batch * length * per_token)


def train_flops(arch, batch: int, query_length: int, passage_length: int) -> float:
  """A train step's model FLOPs: 3x the forward of the queries and the passages."""
  return 3 * (encoder_flops(arch, batch, query_length) + encoder_flops(arch, batch, passage_length))


def mfu(flops: float, seconds: float, peak: float) -> float:
  """Model FLOPs utilisation: flops / seconds / peak."""
  return flops / seconds / peak


def peak_flops(device_kind: str, override_tflops: float | None) -> float | None:
  """The peak bf16 FLOP/s: --peak-tflops, else from PEAK_BF16 by device kind, else None."""
  if override_tflops:
    return override_tflops * 1e12
  for key, value in PEAK_BF16.items():
    if key.lower() in device_kind.lower():
      return value
  return None


def _timed(fn, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - start) / steps


def _xla_flops(compiled) -> float:
  """XLA's FLOP count of a compiled function, per device (nan if it gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and 'flops' in cost else float('nan')


def run(model: str, batch: int, query_length: int, passage_length: int, steps: int,
        dtype: str = 'bfloat16', attention: str = 'matmul') -> dict:
  """Times the train step and the encoder forward; returns seconds and FLOP counts."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from hbt import sharding  # pylint: disable=g-import-not-at-top
  from hbt.model import encoder  # pylint: disable=g-import-not-at-top
  from hbt.train import step as step_lib  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  arch = arch_of(model)
  config = default.get_config()
  config.train.batch_size = batch
  config.train.pack_texts = 1
  module = encoder.Encoder(arch, dtype=jnp.dtype(dtype), dropout_rate=0.0, attention=attention)
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = jax.jit(lambda: nn.unbox(module.init(jax.random.key(0), dummy, dummy))['params'])()
  mesh = sharding.make_mesh(config.mesh)
  tx = step_lib.make_optimizer(config.train)
  shardings = step_lib.state_shardings(module, tx, mesh, config.mesh.rules, True)
  state = step_lib.create_state(params, tx, shardings, True)
  rng = np.random.default_rng(0)

  def side(length):
    ids = rng.integers(5, arch.vocab_size, size=(batch, length)).astype(np.int32)
    return jax.device_put(ids), jax.device_put(np.ones_like(ids))

  (qt, qm), (pt, pm) = side(query_length), side(passage_length)
  b = {'query_tokens': qt, 'query_mask': qm, 'positive_tokens': pt, 'positive_mask': pm}
  start = time.perf_counter()
  train_fn = step_lib.jit_train_step(module, tx, shardings, mesh, config.train, seed=0,
                                  rules=config.mesh.rules).lower(state, b).compile()
  train_compile = time.perf_counter() - start
  holder = [state]

  def train_once():
    holder[0], m = train_fn(holder[0], b)
    jax.block_until_ready(m['loss'])

  train_once()  # warm-up
  train_s = _timed(train_once, steps)

  full = step_lib.merge_params(holder[0])
  encode_fn = jax.jit(lambda p, ids, mask: module.apply({'params': p}, ids, mask)).lower(
      full, pt, pm).compile()
  jax.block_until_ready(encode_fn(full, pt, pm))
  encode_s = _timed(lambda: jax.block_until_ready(encode_fn(full, pt, pm)), steps)
  parity = {}
  if attention != 'matmul':  # its embeddings against the matmul path's, half the rows padded
    lengths = rng.integers(1, passage_length + 1, size=batch)
    lengths[::2] = passage_length
    pad_mask = jnp.asarray(np.arange(passage_length)[None] < lengths[:, None], jnp.int32)
    plain = encoder.Encoder(arch, dtype=jnp.dtype(dtype), dropout_rate=0.0)
    got, want = (np.asarray(jax.jit(lambda p, i, m, mod=mod: mod.apply({'params': p}, i, m))(
        full, pt, pad_mask), np.float32) for mod in (module, plain))
    parity['min_cosine'] = float(np.min(np.sum(got * want, -1)))  # both L2-normalised
  return {**parity, 'train_s': train_s, 'train_compile_s': train_compile,
          'train_flops': train_flops(arch, batch, query_length, passage_length),
          'train_xla_flops': _xla_flops(train_fn) * mesh.size,  # XLA counts per device
          'train_devices': mesh.size, 'encode_s': encode_s, 'encode_devices': 1,
          'encode_flops': encoder_flops(arch, batch, passage_length),
          'encode_xla_flops': _xla_flops(encode_fn)}


def run_torch(model: str, batch: int, query_length: int, passage_length: int, steps: int,
              dtype: str = 'bfloat16', compile_model: bool = False) -> dict:
  """The PyTorch peer of `run`: transformers' XLMRobertaModel of the same shape (random weights,
  its default SDPA attention, which is flash attention on a GPU), autocast to `dtype`, the same
  loss (in-batch InfoNCE over mean-pooled cosine, temperature 0.01), AdamW (fused on a GPU) with
  clipping, word embeddings frozen; optionally torch.compile'd."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  arch = arch_of(model)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  net = common.torch_peer(arch, None).to(device)
  net.embeddings.word_embeddings.weight.requires_grad_(False)
  trainable = [p for p in net.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=3e-5, weight_decay=0.01, eps=1e-6,
                          fused=device == 'cuda')
  autocast = dtype == 'bfloat16'

  def embed(ids, mask):
    out = net(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(out.dtype)
    return torch.nn.functional.normalize(((out * m).sum(1) / m.sum(1)).float(), dim=-1)

  fwd = torch.compile(embed) if compile_model else embed
  rng = np.random.default_rng(0)

  def side(length):
    ids = torch.from_numpy(rng.integers(5, arch.vocab_size, size=(batch, length))).to(device)
    return ids, torch.ones_like(ids)

  (qt, qm), (pt, pm) = side(query_length), side(passage_length)
  labels = torch.arange(batch, device=device)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def train_once():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      q, p = fwd(qt, qm), fwd(pt, pm)
    loss = torch.nn.functional.cross_entropy(q @ p.T / 0.01, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    sync()

  start = time.perf_counter()
  train_once()  # warm-up (and compilation)
  train_once()
  train_compile = time.perf_counter() - start
  train_s = _timed(train_once, steps)

  def encode_once():
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      fwd(pt, pm)
    sync()

  net.eval()
  encode_once()
  encode_once()
  encode_s = _timed(encode_once, steps)
  nan = float('nan')
  return {'train_s': train_s, 'train_compile_s': train_compile,
          'train_flops': train_flops(arch, batch, query_length, passage_length),
          'train_xla_flops': nan, 'train_devices': 1, 'encode_s': encode_s, 'encode_devices': 1,
          'encode_flops': encoder_flops(arch, batch, passage_length), 'encode_xla_flops': nan}


ENGINES = ('hbt', 'hbt_fused', 'torch_eager', 'torch_compile')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--platform', default='', help="JAX platform ('cpu', 'gpu', 'tpu'); "
                      'default: the best available')
  parser.add_argument('--model', default='e5-small,xlmr-large',
                      help=f'comma-separated, from {",".join(SHAPES)}')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--query-length', type=int, default=64)
  parser.add_argument('--passage-length', type=int, default=256)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  parser.add_argument('--engines', default='hbt',
                      help=f'comma-separated, from {",".join(ENGINES)} (hbt_fused: '
                      "hbt with config.model.attention='fused'; torch_*: the PyTorch peer)")
  parser.add_argument('--peak-tflops', type=float, default=None,
                      help='peak FLOP/s of one device in TFLOP/s (default: by device kind)')
  parser.add_argument('--results', default='',
                      help='a JSON-lines file: each engine appends its figures; the ratio lines '
                      "are computed over the whole file (so engines run in separate processes, "
                      'as bench/gpu.sh runs them, still compare)')
  args = parser.parse_args()
  if args.platform:
    os.environ['JAX_PLATFORMS'] = args.platform
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind, args.peak_tflops)
  print(f'{len(jax.devices())} x {device.device_kind} ({device.platform}); peak bf16 '
        f'{"unknown (pass --peak-tflops)" if peak is None else f"{peak / 1e12:.0f} TFLOP/s"}; '
        f'jax {jax.__version__}; load average {os.getloadavg()[0]:.2f}', flush=True)
  if device.platform == 'cpu':
    from hbt.model import dtype as dtype_lib  # pylint: disable=g-import-not-at-top
    flags = dtype_lib.cpu_flags()
    print('CPU flags: ' + ', '.join(f'{f} {"yes" if f in flags else "no"}'
                                    for f in dtype_lib.FAST_BF16_CPU_FLAGS), flush=True)
  results = {}
  shape = (args.batch, args.query_length, args.passage_length, args.steps, args.dtype)
  for model, engine in ((m, e) for m in args.model.split(',') for e in args.engines.split(',')):
    try:  # one engine failing (an old torch, no cuDNN) must not lose the others' figures
      if engine.startswith('torch'):
        r = run_torch(model, *shape, compile_model=engine == 'torch_compile')
      else:
        r = run(model, *shape, attention='fused' if engine == 'hbt_fused' else 'matmul')
    except Exception as e:  # pylint: disable=broad-except
      print(f'{model:<11}{engine}: failed: {type(e).__name__}: {str(e)[:400]}', flush=True)
      continue
    results[model, engine] = r
    if args.results:
      with open(args.results, 'a', encoding='utf-8') as f:
        f.write(json.dumps({'model': model, 'engine': engine, **r}) + '\n')
    for what in ('train', 'encode'):
      flops, seconds, xla = r[f'{what}_flops'], r[f'{what}_s'], r[f'{what}_xla_flops']
      devices = r[f'{what}_devices']
      util = (f'MFU {100 * mfu(flops, seconds, peak * devices):.1f}% on {devices} device(s)'
              if peak else 'MFU unknown')
      xla_note = f'{xla / 1e9:.2f}'
      print(f'{model:<11}{engine:<14}{what:<7}{args.dtype} batch {args.batch} lengths '
            f'{args.query_length}/{args.passage_length}: {seconds * 1e3:9.2f} ms/step, model '
            f'{flops / 1e9:.2f} GFLOP (XLA counts {xla_note}), {flops / seconds / 1e12:8.3f} '
            f'TFLOP/s, {util}', flush=True)
    print(f'{model:<11}{engine:<14}train step compilation {r["train_compile_s"]:.1f} s; peak RSS '
          f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB', flush=True)
    if 'min_cosine' in r:
      print(f'{model:<11}{engine:<14}parity: embeddings against the matmul attention path, '
            f'random padding, min cosine {r["min_cosine"]:.6f}', flush=True)
  if args.results:
    with open(args.results, encoding='utf-8') as f:
      for line in f:
        r = json.loads(line)
        results.setdefault((r['model'], r['engine']), r)
  for model in args.model.split(','):  # best hbt engine against best PyTorch engine
    for what in ('train', 'encode'):
      best = {side: min(((r[f'{what}_s'], e) for (m, e), r in results.items()
                         if m == model and e.startswith(side)), default=None)
              for side in ('hbt', 'torch')}
      if best['hbt'] and best['torch']:
        print(f'{model:<11}{what:<7}hbt ({best["hbt"][1]}) / PyTorch ({best["torch"][1]}) '
              f'speed: {best["torch"][0] / best["hbt"][0]:.2f}x', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
