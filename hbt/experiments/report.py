"""The results report of a sweep, rebuilt from its committed run summaries only.

  python -m hbt.experiments.report --runs=docs/results/runs/strategies --out=docs/results.md

Writes one section of the Markdown file (between markers, so that several sweeps share
docs/results.md and a rebuild replaces only its own section) and PNG plots beside it
(docs/results/<sweep>_*.png): mono, cross and multi mAP per dataset as mean ± std over seeds, the
paper's Table 1 layout; R@1, R@10 and rank distance; per-language tables with the languages
unseen in training apart; the language mix of the training batches; paired tests between arms
over queries; and a computed statement of whether the first arm of each contrast beat the
second, by how much, against the seed-to-seed noise.

A sweep's optional keys (hbt.experiments.sweep) add to this: with 'x_axis' (e.g. 'train.alpha')
the arms are labelled by its value and the final figures are plotted and tabled against it; with
'threshold' each arm's steps to reach a share of the best validation gain (THRESHOLD_RULE); with
'low_resource' those languages are marked † in the per-language tables, and the final MRR per
language and the low-resource mean MRR are given. Runs trained with language clusters
(train.lang_clusters; the clusters of 'model' come from the run's clusters.json) add the mean
cross-lingual mAP over the pairs within and across those clusters and with an unseen language.
Runs that train more than InfoNCE (alignment terms, a language discriminator) add each term's
first and last logged value, and the discriminator's accuracy against chance.

The paired tests are described in PAIRED_TESTS.
"""

import collections
import io as std_io
import pathlib
import re
import sys

from absl import app
from absl import flags
import numpy as np

from hbt import io
from hbt.batches import clusters as clusters_lib
from hbt.experiments import stats
from hbt.experiments import summary as summary_lib

SETTINGS = ('mono', 'cross', 'multi')
ZERO_SHOT, SPEC_FILE = summary_lib.ZERO_SHOT, summary_lib.SPEC_FILE
ALPHA = 0.05  # Significance level of the computed statements.
BENCHMARKS = {'xquad_r': 'XQuAD-R', 'mlqa_r': 'MLQA-R'}
ARM_LABELS = {'x_x_mono': 'X-X-mono', 'x_y': 'X-Y', 'x_x': 'X-X', 'en_en': 'En-En',
              'hybrid': 'hybrid', ZERO_SHOT: 'zero-shot'}
X_LABELS = {'train.alpha': 'α'}  # Short names of x_axis keys in labels and plots.
PAIRED_TESTS = (
    'Two arms are compared on the seeds both have (a sweep cut short may have more seeds of one). '
    "For each arm, a query's AP is averaged over those seeds. The unit is the question (a "
    'parallel id): its AP averaged over the languages it is asked in (and, for cross, over the '
    'target languages), since the translations of one question are not independent queries. The '
    'test is the two-sided sign-flip permutation test of the mean difference over questions '
    '(10,000 sign patterns, hbt/experiments/stats.py), with a 95% bootstrap interval. A verdict '
    f'"higher" or "lower" needs p < {ALPHA} (not corrected for the number of tests) and a '
    'difference larger than the seed-to-seed std of either arm (known from two seeds on), with '
    'Δ mAP and Δ questions of the same sign. Δ mAP is the difference of the macro-averaged mAP of '
    'the tables (every language, or language pair, weighs the same); Δ questions is the mean '
    'difference over questions, the quantity the interval and p refer to (every question weighs '
    'the same). They differ where questions are asked in different numbers of languages, as in '
    "MLQA-R. The seed std is that of each arm's mAP over all its seeds.")


# ----------------------------------------------------------------------------------- loading


def load(folder) -> tuple[dict, list[dict]]:
  """(the sweep definition written by the sweep, or {}; every run summary in the folder)."""
  folder = pathlib.Path(folder)
  paths = sorted(folder.glob('*.json.gz'))
  if not paths:
    raise FileNotFoundError(f'{folder}: no run summaries (*.json.gz)')
  spec_path = folder / SPEC_FILE
  spec = io.read_json(spec_path) if spec_path.exists() else {}
  return spec, [summary_lib.read(p) for p in paths]


class Runs:
  """Summaries indexed by direction and arm, in the sweep's order."""

  def __init__(self, spec: dict, summaries: list[dict]):
    self.spec = spec
    self.name = spec.get('name') or summaries[0]['sweep']
    by = collections.defaultdict(list)
    for s in summaries:
      by[s['direction'], s['arm']].append(s)
    self.by = {k: sorted(v, key=lambda s: s['seed'] if s['seed'] is not None else -1)
               for k, v in by.items()}
    order = lambda keys, listed: [k for k in listed if k in keys] + sorted(set(keys) - set(listed))
    self.directions = order({d for d, _ in self.by}, list(spec.get('directions', {})))
    self.arms = order({a for _, a in self.by if a != ZERO_SHOT}, list(spec.get('arms', {})))
    self.contrasts = [tuple(c) for c in spec.get('contrasts', ())
                      if all(a in self.arms for a in c)]
    self.x_axis = spec.get('x_axis')  # the override the arms vary (None: not a sweep over one)
    self.low_resource = tuple(spec.get('low_resource', ()))

  def x(self, arm) -> float:
    """The arm's value of the sweep's x_axis override (what its runs were given)."""
    return next(s['overrides'][self.x_axis] for (_, a), v in self.by.items() if a == arm
                for s in v)

  def get(self, direction, arm) -> list[dict]:
    return self.by.get((direction, arm), [])

  def trained(self) -> list[dict]:
    return [s for (_, arm), v in self.by.items() if arm != ZERO_SHOT for s in v]

  def rows(self, direction) -> list[str]:
    """Zero-shot first (if evaluated), then the arms."""
    return ([ZERO_SHOT] if self.get(direction, ZERO_SHOT) else []) + self.arms

  def get_any(self, direction) -> dict:
    """A summary of the direction (they share its datasets and languages)."""
    return next(v[0] for (d, _), v in self.by.items() if d == direction)

  def _data(self, direction) -> tuple[str, str]:
    s = self.get_any(direction)
    return s['benchmark'], s['train_data']

  def _shared(self, direction) -> bool:
    """Whether another direction has the same datasets (a sweep over models, say)."""
    return sum(self._data(d) == self._data(direction) for d in self.directions) > 1

  def label(self, direction) -> str:
    benchmark, train = self._data(direction)
    return (f'{bench_name(benchmark)} (trained on {bench_name(train)})'
            + (f', {direction}' if self._shared(direction) else ''))

  def column(self, direction) -> str:
    """The direction's short name in table columns: its benchmark, or the direction's name where
    directions share a benchmark."""
    return direction if self._shared(direction) else bench_name(self._data(direction)[0])

  def langs(self, direction) -> tuple[list[str], list[str]]:
    """(evaluation languages seen in training, unseen) of a direction."""
    s = self.get_any(direction)
    return s['groups'].get('seen', []), s['groups'].get('unseen', [])


def bench_name(name: str) -> str:
  return BENCHMARKS.get(name, name)


def x_label(x_axis: str) -> str:
  return X_LABELS.get(x_axis, x_axis)


def arm_label(spec: dict, arm: str) -> str:
  overrides = spec.get('arms', {}).get(arm, {})
  if spec.get('x_axis') in overrides:
    return f'{x_label(spec["x_axis"])}={overrides[spec["x_axis"]]}'
  label = ARM_LABELS.get(arm, arm)
  if arm == 'hybrid' and 'train.alpha' in overrides:
    label += f' (α={overrides["train.alpha"]})'
  return label


# ------------------------------------------------------------------------------------ figures


def mean_std(values) -> tuple[float, float, int]:
  """(mean, sample std (NaN for one value), count) of the finite values."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if not v.size:
    return float('nan'), float('nan'), 0
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float('nan'), int(v.size)


def fmt(mean: float, std: float = float('nan'), digits: int = 3) -> str:
  """'.800 ± .004' (digits 3); '340 ± 12' (digits 0, e.g. rank distances); '–' for none."""
  if not np.isfinite(mean):
    return '–'
  strip = lambda x: f'{x:.{digits}f}'.replace('0.', '.', 1) if abs(x) < 1 else f'{x:.{digits}f}'
  return strip(mean) + (f' ± {strip(std)}' if np.isfinite(std) else '')


def setting_values(runs: list[dict], setting: str, metric: str, group: str = 'all') -> list:
  return [s['summary'].get(group, {}).get(setting, {}).get(metric) for s in runs]


def per_language(run: dict, setting: str, lang: str, metric: str = 'ap') -> float:
  """A language's figure: mono X-X, cross mean over X-Y (Y != X), multi X in the pool."""
  langs = run['langs']
  if setting == 'mono':
    return run['pairs'][f'{lang}-{lang}'][metric]
  if setting == 'multi':
    return run['multi'][lang][metric]
  values = [run['pairs'][f'{lang}-{c}'][metric] for c in langs if c != lang]
  return float(np.mean(values)) if values else float('nan')


def _table(head: list[str], rows: list[list[str]], align_first_left: bool = True) -> str:
  lines = ['| ' + ' | '.join(head) + ' |',
           '|' + '|'.join([':---' if align_first_left else '---:'] + ['---:'] * (len(head) - 1))
           + '|']
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(lines)


def table_one(runs: Runs) -> str:
  """Mono, cross and multi mAP per dataset, mean ± std over seeds (the paper's Table 1)."""
  head = ['strategy']
  for d in runs.directions:
    head += [f'{runs.column(d)} {s}' for s in SETTINGS]
  head.append('seeds')
  rows = []
  zero = [ZERO_SHOT] if any(runs.get(d, ZERO_SHOT) for d in runs.directions) else []
  for arm in zero + runs.arms:
    row, seeds = [arm_label(runs.spec, arm)], set()
    for d in runs.directions:
      group = runs.get(d, arm)
      seeds |= {s['seed'] for s in group}
      row += [fmt(*mean_std(setting_values(group, s, 'ap'))[:2]) for s in SETTINGS]
    row.append('–' if arm == ZERO_SHOT else str(len(seeds)))
    rows.append(row)
  return _table(head, rows)


def table_recall(runs: Runs) -> str:
  """R@1 and R@10 (mono, cross, multi) and the rank distance, per dataset."""
  cols = [('mono', 'recall@1', 'R@1 mono'), ('cross', 'recall@1', 'R@1 cross'),
          ('multi', 'recall@10', 'R@10 multi'), ('cross', 'recall@10', 'R@10 cross'),
          ('multi', 'rank_distance', 'rank distance')]
  parts = []
  for d in runs.directions:
    rows = []
    for arm in runs.rows(d):
      group = runs.get(d, arm)
      rows.append([arm_label(runs.spec, arm)] + [
          fmt(*mean_std(setting_values(group, s, m))[:2], digits=0 if m == 'rank_distance' else 3)
          for s, m, _ in cols])
    parts.append(f'**{runs.label(d)}**\n\n' + _table(['strategy'] + [c[2] for c in cols], rows))
  return '\n\n'.join(parts)


def table_groups(runs: Runs) -> str:
  """mAP over the languages seen in training and over the unseen ones, where there are any."""
  parts = []
  for d in runs.directions:
    seen, unseen = runs.langs(d)
    if not unseen:
      continue
    head = ['strategy'] + [f'seen {s}' for s in SETTINGS] + [f'unseen {s}' for s in SETTINGS]
    rows = []
    for arm in runs.rows(d):
      group = runs.get(d, arm)
      rows.append([arm_label(runs.spec, arm)] + [
          fmt(*mean_std(setting_values(group, s, 'ap', g))[:2])
          for g in ('seen', 'unseen') for s in SETTINGS])
    parts.append(f'**{runs.label(d)}**: seen {", ".join(seen)}; unseen {", ".join(unseen)}\n\n'
                 + _table(head, rows))
  return '\n\n'.join(parts) if parts else 'Every evaluation language was seen in training.'


def table_languages(runs: Runs, direction: str, setting: str, metric: str = 'ap') -> str:
  """A metric per language (mean over seeds), the unseen languages last and marked *, the
  low-resource ones marked †."""
  seen, unseen = runs.langs(direction)
  mark = lambda l: l + ('*' if l in unseen else '') + ('†' if l in runs.low_resource else '')
  head = ['strategy'] + [mark(l) for l in seen + unseen]
  rows = []
  for arm in runs.rows(direction):
    group = runs.get(direction, arm)
    rows.append([arm_label(runs.spec, arm)] + [
        fmt(mean_std([per_language(s, setting, l, metric) for s in group])[0])
        for l in seen + unseen])
  return _table(head, rows)


def low_resource_mrr(run: dict, setting: str, langs) -> float:
  """A run's MRR in one setting, averaged over the given languages (per_language's figures)."""
  values = [per_language(run, setting, l, 'mrr') for l in langs]
  return float(np.mean(values)) if values else float('nan')


def table_final_mrr(runs: Runs) -> str:
  """MRR over all languages and over the low-resource ones, per arm: mean ± std over seeds."""
  parts = []
  for d in runs.directions:
    low = [l for l in runs.low_resource if l in runs.get_any(d)['langs']]
    head = (['strategy'] + [f'MRR {s}' for s in SETTINGS]
            + [f'low-resource MRR {s}' for s in SETTINGS] + ['seeds'])
    rows = []
    for arm in runs.rows(d):
      group = runs.get(d, arm)
      rows.append([arm_label(runs.spec, arm)]
                  + [fmt(*mean_std(setting_values(group, s, 'mrr'))[:2]) for s in SETTINGS]
                  + [fmt(*mean_std([low_resource_mrr(r, s, low) for r in group])[:2])
                     for s in SETTINGS]
                  + ['–' if arm == ZERO_SHOT else str(len(group))])
    parts.append(f'**{runs.label(d)}**: low-resource languages {", ".join(low) or "none"}\n\n'
                 + _table(head, rows))
  return '\n\n'.join(parts)


# ----------------------------------------------------------------------------- language mix


def language_mix(runs: list[dict]) -> dict | None:
  """Shares of the training pairs, summed over seeds, from the shard manifests' counts."""
  described = [s['describe'] for s in runs if s.get('describe')]
  if not described:
    return None
  query, positive, pairs, kinds = (collections.Counter() for _ in range(4))
  for d in described:
    query.update(d['query_langs'])
    positive.update(d['positive_langs'])
    pairs.update(d['lang_pairs'])
    kinds.update(d['kinds'])
  total = sum(pairs.values())
  split = [p.split('-') for p in pairs]
  english = sum(n for (q, c), n in zip(split, pairs.values()) if 'en' in (q, c))
  same = sum(n for (q, c), n in zip(split, pairs.values()) if q == c)
  return {'pairs': total, 'with_english': english / total, 'same_language': same / total,
          'distinct_pairs': len(pairs), 'kinds': dict(kinds),
          'query': {k: v / total for k, v in sorted(query.items())},
          'positive': {k: v / total for k, v in sorted(positive.items())}}


def table_language_mix(runs: Runs) -> str:
  parts = []
  for d in runs.directions:
    rows = []
    for arm in runs.arms:
      group = runs.get(d, arm)
      mix = language_mix(group)
      if mix is None:
        continue
      top = sorted(mix['query'].items(), key=lambda kv: -kv[1])
      masked = mean_std([(s.get('false_negatives') or {}).get('per_batch') for s in group])[0]
      rows.append([arm_label(runs.spec, arm), f'{mix["pairs"]:,}', f'{mix["with_english"]:.0%}',
                   f'{mix["same_language"]:.0%}', str(mix['distinct_pairs']),
                   '–' if not np.isfinite(masked) else f'{masked:.2f}',
                   ', '.join(f'{k} {v:.0%}' for k, v in top)])
    if rows:
      parts.append(f'**{runs.label(d)}**\n\n' + _table(
          ['strategy', 'pairs', 'with English', 'same language', 'language pairs',
           'false negatives masked / batch', 'query languages'], rows))
  return '\n\n'.join(parts) if parts else 'No language counts in the summaries.'


# ------------------------------------------------------------------------ training terms

# The logged terms of the training objective (hbt.train.step._objective), in table order: the
# InfoNCE (train/loss where it is the only term), the extra alignment terms and the language
# discriminator's loss, accuracy and gradient-reversal lambda.
TERMS = (('info_nce', 'InfoNCE'), ('query_query_loss', 'query-query'),
         ('passage_passage_loss', 'passage-passage'), ('adversarial_loss', 'discriminator loss'),
         ('adversarial_accuracy', 'discriminator accuracy'), ('adversarial_lambda', 'lambda'))
TERMS_NOTE = ('Each training term as logged (the mean over the steps since the previous log), at '
              'the first and the last log of the run: first -> last, mean over seeds (± std of '
              'the last). The discriminator predicts the language of each query and positive '
              'embedding; chance is the share of the most common language among the queries and '
              'positives of the training pairs.')


def term_curve(run: dict, term: str) -> list[tuple[int, float]]:
  """(step, value) of a training term in a run's curves; InfoNCE falls back to train/loss, which
  it is when no other term is trained."""
  rows = run.get('curves') or []
  key = f'train/{term}'
  if term == 'info_nce' and not any(key in r for r in rows):
    key = 'train/loss'
  return [(r['step'], r[key]) for r in rows if key in r]


def table_terms(runs: Runs) -> str:
  """First and last logged value of every training term, per arm; '' if no arm trains more than
  InfoNCE."""
  extra = [t for t, _ in TERMS[1:]
           if any(term_curve(s, t) for s in runs.trained())]
  if not extra:
    return ''
  terms = [t for t, _ in TERMS if t == 'info_nce' or t in extra]
  parts = []
  for d in runs.directions:
    rows = []
    for arm in runs.arms:
      group = runs.get(d, arm)
      if not group:
        continue
      cells = [arm_label(runs.spec, arm)]
      for t in terms:
        curves = [c for c in (term_curve(s, t) for s in group) if c]
        if not curves:
          cells.append('–')
          continue
        first = mean_std([c[0][1] for c in curves])[0]
        last, std, _ = mean_std([c[-1][1] for c in curves])
        cells.append(f'{fmt(first)} -> {fmt(last, std)}')
      if 'adversarial_accuracy' in terms:  # for the arms that trained a discriminator
        mix = language_mix(group) if any(term_curve(s, 'adversarial_accuracy')
                                         for s in group) else None
        cells.append('–' if mix is None else fmt(max(
            (mix['query'].get(l, 0) + mix['positive'].get(l, 0)) / 2
            for l in {*mix['query'], *mix['positive']})))
      rows.append(cells + [str(len(group))])
    if rows:
      chance = ['chance'] if 'adversarial_accuracy' in terms else []
      parts.append(f'**{runs.label(d)}**\n\n' + _table(
          ['strategy'] + [dict(TERMS)[t] for t in terms] + chance + ['seeds'], rows))
  return '\n\n'.join(parts)


# ------------------------------------------------------------------------ language clusters

CLUSTER_PAIRS = (('within', 'within a cluster'), ('across', 'across clusters'),
                 ('unseen', 'with an unseen language'))
CLUSTERS_NOTE = (
    'Cross-lingual pairs X-Y (X != Y, both directions) of the evaluation languages, grouped by a '
    'clustering that an arm trained with: within one cluster and across clusters (both languages '
    'seen in training), and pairs with a language unseen in training. Each figure is the mean '
    'over the group\'s pairs of the pair\'s mAP, then mean ± std over seeds; every arm is scored '
    'on the same pairs, so the rows compare like with like. within − across: per run, then over '
    'seeds.')


def run_clusters(run: dict) -> dict | None:
  """{lang: cluster} that a run's cross-lingual pairs were drawn with: its clusters.json (kept in
  the summary), else its train.lang_clusters override (a table or spec); None without clusters."""
  saved = run.get('lang_clusters')
  if saved:
    return saved['clusters']
  spec = run.get('overrides', {}).get('train.lang_clusters', '')
  if not spec or spec == clusters_lib.MODEL:  # 'model' without its clusters.json: unknown
    return None
  return clusters_lib.parse(spec)


def cluster_pair_groups(langs, seen, clusters: dict) -> dict[str, list[str]]:
  """The ordered cross-lingual pairs 'X-Y' of `langs` by CLUSTER_PAIRS: 'within' / 'across'
  clusters when X and Y are both `seen` in training, else 'unseen'."""
  out = {name: [] for name, _ in CLUSTER_PAIRS}
  for x in langs:
    for y in langs:
      if x == y:
        continue
      if x not in seen or y not in seen:
        out['unseen'].append(f'{x}-{y}')
      elif x in clusters and y in clusters and clusters[x] == clusters[y]:
        out['within'].append(f'{x}-{y}')
      else:
        out['across'].append(f'{x}-{y}')
  return out


def pairs_mean(run: dict, pairs: list[str], metric: str = 'ap') -> float:
  """The mean of a run's figure over the language pairs 'X-Y' (NaN for none)."""
  return float(np.mean([run['pairs'][p][metric] for p in pairs])) if pairs else float('nan')


def table_clusters(runs: Runs) -> str:
  """Per clustering that an arm trained with, every arm's mean cross-lingual mAP within and
  across its clusters and on pairs with an unseen language; '' if no run had clusters."""
  parts = []
  for d in runs.directions:
    seen, unseen = runs.langs(d)
    clusterings = {}  # spec -> (clusters, arms that trained with them)
    for arm in runs.arms:
      for s in runs.get(d, arm):
        clusters = run_clusters(s)
        if clusters:
          entry = clusterings.setdefault(clusters_lib.format_spec(clusters), (clusters, []))
          if arm not in entry[1]:
            entry[1].append(arm)
    for spec, (clusters, arms) in clusterings.items():
      groups = cluster_pair_groups(seen + unseen, seen, clusters)
      rows = []
      for arm in runs.rows(d):
        group = runs.get(d, arm)
        means = {name: [pairs_mean(s, groups[name]) for s in group] for name, _ in CLUSTER_PAIRS}
        rows.append([arm_label(runs.spec, arm)]
                    + [fmt(*mean_std(means[name])[:2]) for name, _ in CLUSTER_PAIRS]
                    + [fmt(*mean_std(np.subtract(means['within'], means['across']))[:2]),
                       str(len(group))])
      head = (['strategy'] + [f'{label} ({len(groups[name])} pairs)'
                              for name, label in CLUSTER_PAIRS] + ['within − across', 'runs'])
      parts.append(f'**{runs.label(d)}**, clusters `{spec}` (the clusters of '
                   f'{", ".join(arm_label(runs.spec, a) for a in arms)})\n\n'
                   + _table(head, rows))
  return '\n\n'.join(parts)


# ------------------------------------------------------------------------------ paired tests


def question_ap(runs: list[dict], setting: str) -> dict[str, float] | None:
  """{question id: AP averaged over the runs (seeds) and the languages it is asked in}."""
  per_run = [s.get('per_query') for s in runs]
  if not per_run or any(p is None for p in per_run):
    return None
  sums, counts = collections.defaultdict(float), collections.defaultdict(int)
  for p in per_run:
    for values in p[setting].values():
      for qid, ap in zip(p['qids'], values):
        if ap is not None:
          sums[qid] += ap
          counts[qid] += 1
  return {q: sums[q] / counts[q] for q in sums}


def matched_seeds(ra: list[dict], rb: list[dict]) -> tuple[list[dict], list[dict]]:
  """The runs of two arms on the seeds both have (all of each when they share none), so that a
  sweep cut short compares its arms on the same seeds."""
  common = {s['seed'] for s in ra} & {s['seed'] for s in rb}
  if not common:
    return ra, rb
  return [s for s in ra if s['seed'] in common], [s for s in rb if s['seed'] in common]


def contrast(runs: Runs, direction: str, a: str, b: str, setting: str) -> dict:
  """Difference of arm a over arm b in one setting on their common seeds (`matched_seeds`):
  macro mAP and paired test; the seed noise is each arm's std over all its seeds."""
  all_a, all_b = runs.get(direction, a), runs.get(direction, b)
  ra, rb = matched_seeds(all_a, all_b)
  ma, _, na = mean_std(setting_values(ra, setting, 'ap'))
  mb, _, nb = mean_std(setting_values(rb, setting, 'ap'))
  sa = mean_std(setting_values(all_a, setting, 'ap'))[1]
  sb = mean_std(setting_values(all_b, setting, 'ap'))[1]
  stds = [x for x in (sa, sb) if np.isfinite(x)]
  out = {'diff': ma - mb, 'std_a': sa, 'std_b': sb, 'seeds': (na, nb), 'p_value': None,
         'ci95': None, 'queries': 0, 'noise': max(stds) if stds else float('nan')}
  qa, qb = question_ap(ra, setting), question_ap(rb, setting)
  if qa and qb:
    common = sorted(set(qa) & set(qb))
    x, y = np.array([qa[q] for q in common]), np.array([qb[q] for q in common])
    test = stats.paired_permutation_test(x, y)
    out.update(p_value=test['p_value'], ci95=stats.paired_bootstrap_ci(x, y),
               queries=len(common), query_diff=test['mean_diff'])
  return out


def decisive(c: dict, sign: int) -> bool:
  """Whether a's difference over b has `sign`, with p < ALPHA and beyond the seed-to-seed std.

  With one seed per arm the seed noise is unknown and only the test over questions decides.
  """
  return (c['p_value'] is not None and c['p_value'] < ALPHA and sign * c['diff'] > 0
          and sign * c.get('query_diff', c['diff']) > 0 and not abs(c['diff']) <= c['noise'])


def verdict(c: dict) -> str:
  """'higher' / 'lower' (decisive), or why not; plus the seed-noise comparison."""
  if c['p_value'] is None:
    word = 'untested (no per-query AP)'
  elif decisive(c, 1) or decisive(c, -1):
    word = 'higher' if c['diff'] > 0 else 'lower'
  elif c['p_value'] < ALPHA and c['diff'] * c.get('query_diff', c['diff']) < 0:
    word = 'significant over questions, but the macro mAP moves the other way'
  elif c['p_value'] < ALPHA:
    word = 'significant over questions but within the seed noise'
  else:
    word = 'no significant difference'
  if np.isfinite(c['noise']):
    word += f'; seed-to-seed std {fmt(c["noise"])}'
  else:
    word += '; seed noise unknown (one seed)'
  return word


def _p(p) -> str:
  return '–' if p is None else ('< .001' if p < 0.001 else fmt(p))


def _signed(x: float) -> str:
  return ('+' if x >= 0 else '−') + fmt(abs(x))


def _contrasts_with_runs(runs: Runs):
  """(direction, arm a, arm b) of every configured contrast whose two arms both have runs."""
  for d in runs.directions:
    for a, b in runs.contrasts:
      if runs.get(d, a) and runs.get(d, b):
        yield d, a, b


def table_tests(runs: Runs) -> str:
  rows = []
  for d, a, b in _contrasts_with_runs(runs):
    for s in SETTINGS:
      c = contrast(runs, d, a, b, s)
      ci = '–' if c['ci95'] is None else f'[{_signed(c["ci95"][0])}, {_signed(c["ci95"][1])}]'
      qd = '–' if c['p_value'] is None else _signed(c['query_diff'])
      rows.append([runs.column(d),
                   f'{arm_label(runs.spec, a)} − {arm_label(runs.spec, b)}', s,
                   _signed(c['diff']), qd, ci, _p(c['p_value']), str(c['queries']),
                   f'{fmt(c["std_a"])} / {fmt(c["std_b"])}', verdict(c)])
  if not rows:
    return 'No contrast has runs of both arms yet.'
  return _table(['dataset', 'contrast', 'setting', 'Δ mAP', 'Δ questions', '95% CI', 'p',
                 'questions', 'seed std a / b', 'verdict'], rows)


def seeds_compared(runs: Runs, direction: str, a: str, b: str) -> str:
  """'seeds 0, 1 (both arms)', or each arm's seeds where they share none."""
  ra, rb = matched_seeds(runs.get(direction, a), runs.get(direction, b))
  seeds = lambda r: ', '.join(str(s['seed']) for s in r)
  if {s['seed'] for s in ra} == {s['seed'] for s in rb}:
    return f'seed{"s" if len(ra) > 1 else ""} {seeds(ra)} (both arms)'
  return f'seeds {seeds(ra)} and {seeds(rb)}'


def headline(runs: Runs) -> str:
  """One computed sentence per dataset and contrast."""
  lines = []
  for d, a, b in _contrasts_with_runs(runs):
    cs = {s: contrast(runs, d, a, b, s) for s in SETTINGS}
    parts = [f'{s} {_signed(c["diff"])} ({verdict(c)}; p {_p(c["p_value"])})'
             for s, c in cs.items()]
    wins = [s for s, c in cs.items() if decisive(c, 1)]
    losses = [s for s, c in cs.items() if decisive(c, -1)]
    if cs['mono']['p_value'] is None:
      outcome = 'could not be tested (no per-query AP) against'
    elif wins and not losses:
      outcome = 'beat'
    elif losses and not wins:
      outcome = 'lost to'
    elif wins:
      outcome = 'traded off against'
    else:
      outcome = 'did not differ significantly from'
    lines.append(f'- **{runs.label(d)}**: {arm_label(runs.spec, a)} {outcome} '
                 f'{arm_label(runs.spec, b)} (higher in: {", ".join(wins) or "none"}; lower in: '
                 f'{", ".join(losses) or "none"}; {seeds_compared(runs, d, a, b)}). mAP differences: '
                 f'{"; ".join(parts)}.')
  return '\n'.join(lines) if lines else '- No contrast has runs of both arms yet.'


# -------------------------------------------------------------------------------------- plots


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: pathlib.Path) -> None:
  png = std_io.BytesIO()
  fig.tight_layout()
  fig.savefig(png, format='png')
  _pyplot().close(fig)
  io.write_atomic(path, png.getvalue())


def arm_colors(runs: Runs) -> dict:
  """{arm: colour}: a viridis scale of the x_axis values; None (matplotlib's cycle) without one."""
  if not runs.x_axis:
    return {}
  plt = _pyplot()
  xs = {arm: runs.x(arm) for arm in runs.arms}
  low, high = min(xs.values()), max(xs.values())
  return {arm: plt.cm.viridis((x - low) / (high - low) if high > low else 0.5)
          for arm, x in xs.items()}


def plot_map(runs: Runs, path: pathlib.Path) -> None:
  """Grouped bars: mono / cross / multi mAP per arm, error bars = std over seeds."""
  plt = _pyplot()
  colors = arm_colors(runs)
  fig, axes = plt.subplots(1, len(runs.directions), figsize=(6 * len(runs.directions), 3.6),
                           dpi=110, squeeze=False)
  for ax, d in zip(axes[0], runs.directions):
    arms = runs.rows(d)
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
      stats_ = [mean_std(setting_values(runs.get(d, arm), s, 'ap')) for s in SETTINGS]
      ax.bar(np.arange(3) + (i - (len(arms) - 1) / 2) * width, [m for m, _, _ in stats_], width,
             yerr=[0 if not np.isfinite(e) else e for _, e, _ in stats_], capsize=2,
             label=arm_label(runs.spec, arm), color=colors.get(arm))
    ax.set_xticks(range(3), SETTINGS)
    ax.set_ylim(0, 1)
    ax.set_ylabel('mAP')
    ax.set_title(runs.label(d), fontsize=9)
    ax.legend(fontsize=7)
  _save(fig, path)


CURVES = (('val/loss', 'validation loss'), ('val_map/multi/ap', 'validation multi mAP'))
# The curves of a sweep with an x_axis, and those of its steps-to-threshold table. With one
# relevant candidate per query and language, mono and cross MRR equal mono and cross AP: only the
# multilingual pool (one relevant per language) tells MRR from AP.
THRESHOLD_CURVES = (('val_map/mono/ap', 'validation mono mAP'),
                    ('val_map/cross/ap', 'validation cross mAP'),
                    ('val_map/multi/ap', 'validation multi mAP'),
                    ('val_map/multi/mrr', 'validation multi MRR'))
X_CURVES = THRESHOLD_CURVES + (('val/loss', 'validation loss'),)
THRESHOLD_RULE = (
    'For each validation curve (mean over seeds): start = its value at step 0 (the pretrained '
    'model), averaged over every trained run; best = the highest last-step value of any arm; '
    'threshold = start + {fraction} x (best - start). An arm\'s steps to threshold are the first '
    'evaluated step at which its mean curve reaches the threshold; in brackets, each seed\'s own '
    'curve against the same threshold (seeds in order). "not reached" / "n.r.": not within the '
    'budget; "–": no arm gained over step 0.')


def curve(runs: list[dict], key: str) -> tuple[list[int], list[float]]:
  """(steps, mean over the runs) of one scalar of the runs' training curves."""
  values = collections.defaultdict(list)
  for s in runs:
    for row in s.get('curves') or ():
      if row.get(key) is not None:
        values[row['step']].append(row[key])
  steps = sorted(values)
  return steps, [float(np.mean(values[t])) for t in steps]


def first_step(steps, values, threshold: float) -> int | None:
  """The first step whose value reaches the threshold; None if none does."""
  return next((t for t, v in zip(steps, values) if v >= threshold), None)


def threshold_of(runs: Runs, direction: str, key: str, fraction: float) -> dict | None:
  """{'start', 'best', 'best_arm', 'threshold' (None if no arm gained)} of one validation curve
  (THRESHOLD_RULE); None if the runs have no such curve from step 0."""
  steps, values = curve([s for a in runs.arms for s in runs.get(direction, a)], key)
  curves = {a: curve(runs.get(direction, a), key)[1] for a in runs.arms}
  finals = {a: c[-1] for a, c in curves.items() if c}
  if not steps or steps[0] != 0:
    return None
  best_arm = max(finals, key=finals.get)
  start, best = values[0], finals[best_arm]
  return {'start': start, 'best': best, 'best_arm': best_arm,
          'threshold': start + fraction * (best - start) if best > start else None}


def steps_to_threshold(runs: list[dict], key: str, threshold: float):
  """(first step of the mean curve over the runs, [first step of each run's curve])."""
  return (first_step(*curve(runs, key), threshold),
          [first_step(*curve([s], key), threshold) for s in runs])


def table_threshold(runs: Runs, fraction: float) -> str:
  """Steps to threshold per arm and validation curve (THRESHOLD_RULE), per dataset."""
  parts = []
  for d in runs.directions:
    found = {k: threshold_of(runs, d, k, fraction) for k, _ in THRESHOLD_CURVES}
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
      continue
    lines = [f'- {k}: start {fmt(v["start"])}, best {fmt(v["best"])} '
             f'({arm_label(runs.spec, v["best_arm"])}), threshold '
             + ('– (no arm gained over step 0)' if v['threshold'] is None
                else fmt(v['threshold'], digits=4)) for k, v in found.items()]
    rows = []
    for arm in runs.arms:
      row = [arm_label(runs.spec, arm)]
      for k, v in found.items():
        if v['threshold'] is None:
          row.append('–')
          continue
        mean, seeds = steps_to_threshold(runs.get(d, arm), k, v['threshold'])
        row.append(('not reached' if mean is None else str(mean)) + ' ('
                   + ', '.join('n.r.' if t is None else str(t) for t in seeds) + ')')
      rows.append(row)
    parts.append(f'**{runs.label(d)}**\n\n' + '\n'.join(lines) + '\n\n'
                 + _table(['strategy'] + list(found), rows))
  if not parts:
    return 'No validation curves from step 0 in the summaries.'
  return THRESHOLD_RULE.format(fraction=fraction) + '\n\n' + '\n\n'.join(parts)


def plot_curves(runs: Runs, path: pathlib.Path, keys=CURVES) -> bool:
  """Validation figures over the training steps, per arm (mean over seeds); False if none."""
  if not any(curve(runs.get(d, a), k)[0] for d in runs.directions for a in runs.arms
             for k, _ in keys):
    return False
  plt = _pyplot()
  colors = arm_colors(runs)
  fig, axes = plt.subplots(len(keys), len(runs.directions), squeeze=False, dpi=110,
                           figsize=(6 * len(runs.directions), 3.2 * len(keys)))
  for col, d in enumerate(runs.directions):
    for row, (key, label) in enumerate(keys):
      ax = axes[row][col]
      for arm in runs.arms:
        steps, values = curve(runs.get(d, arm), key)
        if steps:
          ax.plot(steps, values, marker='o', markersize=3, label=arm_label(runs.spec, arm),
                  color=colors.get(arm))
      ax.set_xlabel('step')
      ax.set_ylabel(label)
      train = bench_name(runs.get_any(d)['train_data'])
      ax.set_title(f'{runs.label(d)}; validation: held-out {train} ids', fontsize=9)
      if ax.lines and (row == 0 or not colors):  # many arms on one scale: one legend
        ax.legend(fontsize=7, ncol=2 if colors else 1)
  _save(fig, path)
  return True


def plot_final(runs: Runs, path: pathlib.Path) -> None:
  """Per dataset, against the x_axis: mono / cross / multi mAP, and the low-resource languages'
  MRR; mean ± std over seeds, the zero-shot figure dashed."""
  plt = _pyplot()
  fig, axes = plt.subplots(len(runs.directions), 2, squeeze=False, dpi=110,
                           figsize=(11, 3.6 * len(runs.directions)))
  arms = sorted(runs.arms, key=runs.x)
  xs = [runs.x(a) for a in arms]
  for (left, right), d in zip(axes, runs.directions):
    low = [l for l in runs.low_resource if l in runs.get_any(d)['langs']]
    panels = ((left, 'mAP (all languages)', lambda group, s: setting_values(group, s, 'ap')),
              (right, f'MRR of the low-resource languages ({", ".join(low) or "none"})',
               lambda group, s: [low_resource_mrr(r, s, low) for r in group]))
    for ax, ylabel, values in panels:
      for i, s in enumerate(SETTINGS):
        figures = [mean_std(values(runs.get(d, a), s)) for a in arms]
        ax.errorbar(xs, [m for m, _, _ in figures], capsize=2, marker='o', markersize=3,
                    yerr=[0 if not np.isfinite(e) else e for _, e, _ in figures], label=s,
                    color=f'C{i}')
        zero = mean_std(values(runs.get(d, ZERO_SHOT), s))[0]
        if np.isfinite(zero):
          ax.axhline(zero, color=f'C{i}', linestyle='--', linewidth=0.8)
      ax.set_xlabel(f'{x_label(runs.x_axis)} ({runs.x_axis})')
      ax.set_ylabel(ylabel, fontsize=8)
      ax.set_title(f'{runs.label(d)}; dashed: zero-shot', fontsize=9)
      ax.legend(fontsize=7)
  _save(fig, path)


def plot_language_mix(runs: Runs, path: pathlib.Path) -> bool:
  """Per dataset: the share of training pairs whose query is in each language, per arm."""
  plt = _pyplot()
  mixes = {d: {a: language_mix(runs.get(d, a)) for a in runs.arms} for d in runs.directions}
  if not any(m for v in mixes.values() for m in v.values()):
    return False
  fig, axes = plt.subplots(1, len(runs.directions), figsize=(6 * len(runs.directions), 3.4),
                           dpi=110, squeeze=False)
  for ax, d in zip(axes[0], runs.directions):
    arms = [a for a in runs.arms if mixes[d][a]]
    langs = sorted({l for a in arms for l in mixes[d][a]['query']})
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
      ax.bar(np.arange(len(langs)) + (i - (len(arms) - 1) / 2) * width,
             [mixes[d][arm]['query'].get(l, 0) for l in langs], width,
             label=arm_label(runs.spec, arm))
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel('share of training queries')
    ax.set_title(f'{runs.label(d)}: query languages', fontsize=9)
    ax.legend(fontsize=7)
  _save(fig, path)
  return True


# ------------------------------------------------------------------------------------- report


def _header(runs: Runs, runs_dir: str, out: str) -> str:
  trained = runs.trained()
  every = [s for group in runs.by.values() for s in group]
  spec = runs.spec
  budgets = {(s['budget']['steps'], s['budget']['batch_size']) for s in trained}
  b = dict((trained or every)[0]['budget'])
  for key in ('learning_rate', 'warmup_steps', 'loss_temperature'):  # say so where arms differ
    values = sorted({s['budget'].get(key) for s in trained}, key=str)
    if len(values) > 1:
      b[key] = 'varies by arm (' + ', '.join(map(str, values)) + ')'
  seeds = sorted({s['seed'] for s in trained})
  expected = len(spec['seeds']) * len(spec['directions']) * len(spec['arms']) if spec else None
  machines = sorted({f'{s["machine"]["cpu"]} ({s["machine"]["cores"]} cores'
                     f'{", " + "/".join(s["machine"]["bf16_flags"]) if s["machine"]["bf16_flags"] else ""})'
                     for s in every})
  train_s = mean_std([s['timing'].get('train_s') for s in trained])
  eval_s = mean_std([s['timing'].get('eval_s') for s in trained])
  total_h = sum(s['timing'].get('train_s', 0) + s['timing'].get('eval_s', 0) for s in every) / 3600
  sweep_file = spec.get('file', f'configs/sweeps/{runs.name}.py')
  lines = [
      f'Generated by `python -m hbt.experiments.report --runs={runs_dir} --out={out}` from the '
      'committed run summaries; do not edit by hand. Runs: '
      f'`python -m hbt.experiments.sweep --sweep={sweep_file} --workdir=runs/{runs.name}` '
      '(a second call resumes, skipping runs whose summary exists; commit the new summaries).',
      '',
      f'- Model: {"; ".join(sorted({s["budget"]["model"] for s in every}))}.',
      f'- Budget per run: {b.get("steps")} steps x {b.get("batch_size")} pairs '
      f'({b.get("pairs", 0):,} pairs), peak learning rate {b.get("learning_rate")}, warmup '
      f'{b.get("warmup_steps")}, temperature {b.get("loss_temperature")}; evaluation languages: '
      f'{b.get("eval_langs")}. Same steps and batch size in every run: '
      f'{"yes" if len(budgets) <= 1 else "NO: " + str(sorted(budgets))}.',
      f'- Seeds: {", ".join(map(str, seeds)) or "none yet"}; trained runs: {len(trained)}'
      + (f' of {expected}' if expected else '') + '. Mean ± std over seeds; zero-shot is one '
      'evaluation of the pretrained model per dataset.',
      f'- Wall time per run: training {fmt(*train_s[:2], digits=0)} s, evaluation '
      f'{fmt(*eval_s[:2], digits=0)} s; '
      f'{total_h:.1f} h in all. Machines: {"; ".join(machines) or "–"}.',
      f'- Code: {code_versions(trained)}',
  ]
  return '\n'.join(lines)


def code_versions(trained: list[dict]) -> str:
  """The commits the trained runs ran, with their counts; a warning when they differ."""
  counts = collections.Counter(s.get('commit') or 'unknown' for s in trained)
  if not counts:
    return 'no trained runs yet.'
  listed = ', '.join(f'`{c[:12]}` ({n} run{"s" if n > 1 else ""})' for c, n in sorted(counts.items()))
  if len(counts) == 1:
    return f'every trained run at commit {listed}.'
  return (f'runs at {len(counts)} commits: {listed}. A change of the training code between them '
          'confounds the comparison: check `git diff` between them, or rerun.')


def render(runs: Runs, runs_dir: str, out: str, figures: pathlib.Path, rel: str) -> str:
  """The Markdown section; writes the PNGs into `figures` (linked as rel/<name>)."""
  plot_map(runs, figures / f'{runs.name}_map.png')
  has_mix = plot_language_mix(runs, figures / f'{runs.name}_langmix.png')
  has_curves = plot_curves(runs, figures / f'{runs.name}_curves.png',
                           X_CURVES if runs.x_axis else CURVES)
  sections = [
      f'## Sweep `{runs.name}`', _header(runs, runs_dir, out),
      '### Headline (computed)', headline(runs),
      '### mAP, mean ± std over seeds (the paper\'s Table 1)',
      '; '.join(runs.label(d) for d in runs.directions) + '.', table_one(runs),
      f'![mAP per strategy]({rel}/{runs.name}_map.png)',
      '### Recall and language bias', table_recall(runs),
      '### Languages seen and unseen in training', table_groups(runs),
  ]
  by_cluster = table_clusters(runs)
  if by_cluster:
    sections += ['### Cross-lingual pairs within and across language clusters', CLUSTERS_NOTE,
                 by_cluster]
  sections += [
      '### Per language (mAP, mean over seeds; * = unseen in training'
      + ('; † = low-resource)' if runs.low_resource else ')'),
  ]
  what = {'mono': 'X-X', 'cross': 'X-Y averaged over Y != X', 'multi': 'X in the pool'}
  for d in runs.directions:
    for s in SETTINGS:
      sections += [f'**{runs.label(d)}, {s}** ({what[s]})', table_languages(runs, d, s)]
  if runs.x_axis:
    plot_final(runs, figures / f'{runs.name}_final.png')
    sections += [f'### Final figures against {x_label(runs.x_axis)} ({runs.x_axis})',
                 'Left: mono, cross and multi mAP over all languages (the Table 1 figures); '
                 'right: the mean MRR of the low-resource languages (the table below); mean ± '
                 'std over seeds, the zero-shot figures dashed.',
                 f'![final figures against {runs.x_axis}]({rel}/{runs.name}_final.png)']
  if runs.low_resource:
    sections += [
        '### Final MRR, all and low-resource languages (mean ± std over seeds)',
        'MRR is 1 / the best rank of a relevant candidate. Mono and cross have one relevant '
        'candidate per query and target language, so their MRR equals their AP; multi has one '
        'per language of the pool. A low-resource figure is the mean over those languages as '
        'query languages (cross: each against every other language).', table_final_mrr(runs),
        '### MRR per language (mean over seeds; * = unseen in training; † = low-resource)']
    for d in runs.directions:
      for s in SETTINGS:
        sections += [f'**{runs.label(d)}, {s} MRR** ({what[s]})',
                     table_languages(runs, d, s, 'mrr')]
  terms = table_terms(runs)
  if terms:
    sections += ['### Training terms (first -> last log)', TERMS_NOTE, terms]
  sections += ['### Language mix of the training batches', table_language_mix(runs)]
  if has_mix:
    sections.append(f'![query languages of the training pairs]({rel}/{runs.name}_langmix.png)')
  if has_curves:
    sections += ['### Convergence (validation evaluators, mean over seeds)',
                 f'![validation curves]({rel}/{runs.name}_curves.png)']
    if runs.spec.get('threshold'):
      sections += ['#### Steps to threshold', table_threshold(runs, runs.spec['threshold'])]
  sections += ['### Paired tests over questions', PAIRED_TESTS, table_tests(runs)]
  return '\n\n'.join(sections) + '\n'


def splice(document: str, name: str, section: str) -> str:
  """Replaces (or appends) the sweep's marked section of the results document."""
  begin, end = f'<!-- begin sweep {name} -->', f'<!-- end sweep {name} -->'
  block = f'{begin}\n{section}{end}'
  pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
  if pattern.search(document):
    return pattern.sub(lambda _: block, document)
  return document.rstrip('\n') + '\n\n' + block + '\n'


DOCUMENT_HEAD = """# Results

Each section is generated from the run summaries committed under `docs/results/runs/<sweep>/`;
rebuild one with `python -m hbt.experiments.report --runs=docs/results/runs/<sweep>
--out=docs/results.md` (it replaces only its own section).
"""


def write_report(runs_dir, out) -> pathlib.Path:
  """Rebuilds the sweep's section of `out` and its figures (in <out's folder>/results/)."""
  runs = Runs(*load(runs_dir))
  out = pathlib.Path(out)
  figures = out.parent / 'results'
  section = render(runs, str(runs_dir), str(out), figures, 'results')
  document = out.read_text() if out.exists() else DOCUMENT_HEAD
  io.write_atomic(out, splice(document, runs.name, section).encode())
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    print(f'wrote {write_report(_RUNS.value, _OUT.value)}')
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that the library imports beside others.
  _RUNS = flags.DEFINE_string('runs', None, 'Folder of run summaries, docs/results/runs/<sweep>.')
  _OUT = flags.DEFINE_string('out', 'docs/results.md', 'Markdown file to update.')
  flags.mark_flags_as_required(['runs'])
  app.run(main)
