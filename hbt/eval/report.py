"""Reporting evaluation results: console tables, a JSON file and a query x candidate mAP heatmap.

Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated
report in place of a good one.
"""

import io as std_io

import numpy as np

from hbt import io

COLUMNS = (('mAP', 'ap'), ('R@1', 'recall@1'), ('R@10', 'recall@10'), ('MRR', 'mrr'),
           ('nDCG@10', 'ndcg@10'))


def table(summary: dict, title: str = '') -> str:
  """A fixed-width table: one row per setting, metric columns plus the rank distance."""
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
