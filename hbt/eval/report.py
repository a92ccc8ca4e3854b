"""Reporting evaluation results: console tables, JSON, a mAP heatmap, per-query and TREC files.

Per evaluation `name` (see hbt.eval.run.write_report), under the workdir's eval/ folder:
  <name>.json            every per-pair, per-language and setting figure (`json_results`);
  <name>.png             the query x candidate language mAP heatmap;
  <name>_per_query.npz   results['per_query'] (`write_per_query` / `read_per_query`);
  trec/<name>/           TREC run files and qrels (`write_trec`), to check any figure with
                         trec_eval, pytrec_eval or ranx.

Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated
report in place of a good one.
"""

import io as std_io

from flax import traverse_util
import numpy as np

from hbt import io

COLUMNS = (('mAP', 'ap'), ('R@1', 'recall@1'), ('R@10', 'recall@10'), ('MRR', 'mrr'),
           ('nDCG@10', 'ndcg@10'))


def table(summary: dict, title: str = '') -> str:
  """A fixed-width table: one row per setting, metric columns plus the rank distance; a BEIR
  summary (flat {metric: mean}) as one row of its metrics."""
  if summary and all(isinstance(v, float) for v in summary.values()):
    head = f"{'':<8}" + ''.join(f'{name:>12}' for name in summary)
    row = f"{'all':<8}" + ''.join(f'{value:>12.4f}' for value in summary.values())
    return '\n'.join(([title] if title else []) + [head, row])
  head = f"{'setting':<8}" + ''.join(f'{name:>9}' for name, _ in COLUMNS) + f"{'rank dist':>11}"
  lines = [title, head] if title else [head]
  for setting in ('mono', 'cross', 'multi'):
    row = summary.get(setting)
    if not row:
      continue
    dist = f"{row['rank_distance']:>11.1f}" if setting == 'multi' else f"{'':>11}"
    lines.append(f'{setting:<8}' + ''.join(f'{row[key]:>9.3f}' for _, key in COLUMNS) + dist)
  return '\n'.join(lines)


def side_by_side(left: str, right: str, gap: int = 4) -> str:
  """Two blocks of text next to each other."""
  a, b = left.splitlines(), right.splitlines()
  width = max(map(len, a), default=0)
  a += [''] * (len(b) - len(a))
  b += [''] * (len(a) - len(b))
  return '\n'.join(f'{x:<{width}}{" " * gap}{y}' for x, y in zip(a, b))


# Results entries held as arrays (per query, top candidates): written by write_per_query and
# write_trec, not to the JSON.
ARRAY_KEYS = ('per_query', 'top')
TREC_RUN_TAG = 'hbt'


def json_results(results: dict) -> dict:
  """`results` without its per-query arrays (ARRAY_KEYS), ready for JSON."""
  return {k: v for k, v in results.items() if k not in ARRAY_KEYS}


def write_per_query(path, per_query: dict) -> None:
  """results['per_query'] as one compressed .npz, keys joined by '/' (e.g. 'pairs/en-de/ap').

  Layout (Q queries of a language, n of them with an answer in the target, L languages):
    langs str [L]; sizes int32 [L] (candidates per language);
    queries/<X>/{qids str [Q], answers int32 [Q, L], ahead int32 [Q, L, L]};
    pairs/<X>-<Y>/{qids str [n], rank int32 [n], ap, mrr, recall@1, recall@10, ndcg@10 float32 [n]};
    multi/<X>/{qids str [n], ap, mrr, recall@1, recall@10, ndcg@10 float32 [n], rank_min, rank_max
      int32 [n]}.
  """
  buffer = std_io.BytesIO()
  flat = traverse_util.flatten_dict(per_query, sep='/')
  np.savez_compressed(buffer, **{key: np.asarray(value) for key, value in flat.items()})
  io.write_atomic(path, buffer.getvalue())


def read_per_query(path) -> dict:
  """The per_query dict that write_per_query wrote (langs as a list)."""
  with io.path(path).open('rb') as f, np.load(f, allow_pickle=False) as data:
    out = traverse_util.unflatten_dict({key: data[key] for key in data.files}, sep='/')
  out['langs'] = [str(l) for l in out['langs']]
  return out


def _docnos(langs, sizes) -> dict[str, list[str]]:
  """TREC docnos of every candidate: '<reverse pool index>-<lang>-<index in lang>'.

  trec_eval orders equal scores by docno descending; hbt ranks ties by pool index ascending, so
  docnos start with the zero-padded reverse pool index and both orders agree.
  """
  total = int(np.sum(sizes))
  width = len(str(max(total - 1, 0)))
  out, start = {}, 0
  for lang, size in zip(langs, sizes):
    out[lang] = [f'{total - 1 - (start + i):0{width}d}-{lang}-{i}' for i in range(int(size))]
    start += int(size)
  return out


def _column(strings) -> np.ndarray:
  """Strings as a uint8 [n, width] array of their UTF-8 bytes, padded with spaces to the longest."""
  encoded = [str(x).encode() for x in strings]
  fixed = np.char.ljust(np.asarray(encoded, dtype=np.bytes_), max(1, max(map(len, encoded))))
  return fixed.view(np.uint8).reshape(len(fixed), -1)


# The ASCII digits of 0..999, zero-padded: uint8 [1000, 3].
_THREE_DIGITS = np.array([list(f'{i:03d}'.encode()) for i in range(1000)], np.uint8)


def format_scores(values: np.ndarray) -> np.ndarray:
  """float32 scores as uint8 [n, 15] ASCII, '%.8e' with a sign column: ' 8.34212240e-01'.

  Nine significant digits tell apart every two float32 values (adjacent ones differ by at least
  6e-8 relative, 9 digits resolve 1e-8), and the map is monotonic, so the text keeps the scores'
  order and ties exactly, as trec_eval reads them. Vectorised: no Python formatting per score.
  """
  v = np.asarray(values, np.float32).astype(np.float64).reshape(-1)
  a = np.abs(v)
  exponent = np.floor(np.log10(np.where(a > 0, a, 1.0))).astype(np.int64)
  mantissa = np.rint(a * np.power(10.0, 8 - exponent)).astype(np.int64)
  for _ in range(2):  # log10 may be off by one next to a power of ten; rounding may reach 10^9
    fix = np.flatnonzero((mantissa >= 10**9) | ((mantissa < 10**8) & (a > 0)))
    exponent[fix] += np.where(mantissa[fix] >= 10**9, 1, -1)
    mantissa[fix] = np.rint(a[fix] * np.power(10.0, 8 - exponent[fix]))
  out = np.empty((len(v), 15), np.uint8)
  out[:, 0] = np.where(v < 0, ord('-'), ord(' '))
  top = _THREE_DIGITS[mantissa // 1_000_000]
  out[:, 1] = top[:, 0]
  out[:, 2] = ord('.')
  out[:, 3:5] = top[:, 1:]
  out[:, 5:8] = _THREE_DIGITS[mantissa // 1000 % 1000]
  out[:, 8:11] = _THREE_DIGITS[mantissa % 1000]
  out[:, 11] = ord('e')
  out[:, 12] = np.where(exponent < 0, ord('-'), ord('+'))
  out[:, 13:15] = _THREE_DIGITS[np.abs(exponent)][:, 1:]
  return out


def _run_bytes(qids: np.ndarray, values: np.ndarray, index: np.ndarray,
               docnos: np.ndarray) -> bytes:
  """TREC run lines 'qid Q0 docno rank score tag' of each query's candidates, best first.

  Args:
    qids: the Q query ids as a `_column`.
    values: float32 [Q, k] each query's best scores, best first.
    index: int32 [Q, k] their candidates (rows of docnos), -1 where none (skipped).
    docnos: the candidates' docnos as a `_column`.

  Fields are padded with spaces to a fixed width (trec_eval, pytrec_eval and ranx split on
  whitespace), so that all lines are assembled in NumPy at once.
  """
  num, depth = index.shape
  keep = (index >= 0).reshape(-1)
  rank = np.cumsum(index >= 0, axis=1).reshape(-1)[keep]
  rows = np.repeat(np.arange(num), depth)[keep]
  fields = [qids[rows], b' Q0 ', docnos[index.reshape(-1)[keep]], b' ',
            _column(range(depth + 1))[rank], b' ', format_scores(values.reshape(-1)[keep]),
            f' {TREC_RUN_TAG}\n'.encode()]
  widths = [f.shape[1] if isinstance(f, np.ndarray) else len(f) for f in fields]
  out = np.empty((len(rows), sum(widths)), np.uint8)
  start = 0
  for field, width in zip(fields, widths):
    out[:, start:start + width] = field if isinstance(field, np.ndarray) else np.frombuffer(
        field, np.uint8)
    start += width
  return out.tobytes()


def write_trec(folder, results: dict) -> None:
  """TREC run files of every query's results['trec_depth'] top candidates and their qrels.

  Files in `folder`:
    <X>-<Y>.run   queries of X that have an answer in Y, each with its top k candidates of Y;
    multi-<X>.run queries of X, each with its top k candidates of the whole pool;
    <Y>.qrels     each query id's answer among the candidates of Y;
    multi.qrels   each query id's answers in every language.
  `trec_eval -m map Y.qrels X-Y.run` gives the X-Y mAP of the report and
  `trec_eval -m map multi.qrels multi-X.run` the multilingual mAP of X, exactly when every answer
  is in the run's top k (an answer below it adds 0 to trec_eval's AP instead of 1 / its rank:
  with k = 100 the difference is below 0.01 for that query). Scores are written with 9 significant
  digits, which keeps float32 ties and order.
  """
  folder = io.path(folder)
  per_query, top = results['per_query'], results['top']
  langs, sizes = per_query['langs'], per_query['sizes']
  docnos = _docnos(langs, sizes)
  pool_docnos = [d for lang in langs for d in docnos[lang]]
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  multi_qrels = {}
  for y, lang in enumerate(langs):
    entry = per_query['queries'][lang]
    qrels = [f'{q} 0 {docnos[lang][a]} 1' for q, a in zip(entry['qids'], entry['answers'][:, y])]
    io.write_atomic(folder / f'{lang}.qrels', ('\n'.join(qrels) + '\n').encode())
    for x_entry in per_query['queries'].values():
      for q, a in zip(x_entry['qids'], x_entry['answers'][:, y]):
        if a >= 0:
          multi_qrels.setdefault(str(q), set()).add(docnos[lang][a])
  io.write_atomic(folder / 'multi.qrels', ''.join(
      f'{q} 0 {d} 1\n' for q, docs in multi_qrels.items() for d in sorted(docs)).encode())
  columns = {lang: _column(docnos[lang]) for lang in langs}
  pool_column = _column(pool_docnos)
  for x in langs:
    entry, best = per_query['queries'][x], top[x]
    qids = _column(entry['qids'])
    for y, lang in enumerate(langs):
      keep = entry['answers'][:, y] >= 0
      io.write_atomic(folder / f'{x}-{lang}.run', _run_bytes(
          qids[keep], best['values'][keep, y], best['index'][keep, y], columns[lang]))
    # The pool's top k is among the languages' top k: merge them. A stable sort keeps tied
    # candidates in language order, then index order (top_k's), which is pool order.
    num = len(entry['qids'])
    values = best['values'].reshape(num, -1)
    pool_index = np.where(best['index'] >= 0, best['index'] + offsets[None, :, None], -1)
    order = np.argsort(-values, axis=1, kind='stable')[:, :results['trec_depth']]
    io.write_atomic(folder / f'multi-{x}.run', _run_bytes(
        qids, np.take_along_axis(values, order, 1),
        np.take_along_axis(pool_index.reshape(num, -1), order, 1), pool_column))


def map_matrix(results: dict) -> np.ndarray:
  """[query language, candidate language] mAP from the per-pair results."""
  langs = results['langs']
  return np.array([[results['pairs'][f'{q}-{c}']['ap'] for c in langs] for q in langs])


def write_heatmap(path, results: dict, title: str) -> None:
  """A PNG heatmap of the query-language x candidate-language mAP matrix, values annotated."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  langs, m = results['langs'], map_matrix(results)
  fig, ax = plt.subplots(figsize=(1 + 0.6 * len(langs), 0.8 + 0.55 * len(langs)), dpi=120)
  image = ax.imshow(m, vmin=0, vmax=1, cmap='viridis')
  ax.set_xticks(range(len(langs)), langs)
  ax.set_yticks(range(len(langs)), langs)
  ax.set_xlabel('candidate language')
  ax.set_ylabel('query language')
  ax.set_title(title, fontsize=9)
  for i in range(len(langs)):
    for j in range(len(langs)):
      ax.text(j, i, f'{m[i, j]:.2f}'[1:] if m[i, j] < 1 else '1.0', ha='center', va='center',
              fontsize=6, color='white' if m[i, j] < 0.6 else 'black')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='mAP')
  fig.tight_layout()
  png = std_io.BytesIO()
  fig.savefig(png, format='png')
  plt.close(fig)
  io.write_atomic(path, png.getvalue())
