"""A finished run as a small summary: its settings, figures, language mix and per-query AP.

A sweep runs in workdirs that a fresh machine does not keep (runs/...). What the report needs of a
run is its summary, a gzipped JSON written into a committed folder
(docs/results/runs/<sweep>/<run>.json.gz), so that the report is rebuilt from the repository and
a resumed sweep skips the runs whose summary exists.

`read_run_outputs` is the one place that knows where hbt.main leaves its results in a workdir.
"""

import gzip
import json
import os
import pathlib
import platform
import subprocess
import time
import warnings

import numpy as np

from hbt import io
from hbt.batches import input_pipeline
from hbt.data import sources
from hbt.eval import evaluate
from hbt.eval import report as eval_report
from hbt.model import build

FORMAT_VERSION = 1
ZERO_SHOT = 'zero_shot'  # The arm of a run that evaluates the pretrained model (no training).
SPEC_FILE = '_sweep.json'  # The sweep's definition, written beside its summaries.
DIGITS = 5  # Figures are rounded to this many decimals (AP of one query: 4 would do).
PER_QUERY_DIGITS = 4


def read_run_outputs(workdir: str | os.PathLike) -> dict:
  """What hbt.main (mode 'eval', after 'train') left in workdir, for the summary.

  Returns:
    {'results': the results of the run's one benchmark evaluation, eval/<benchmark>.json (langs,
     pairs, multi, summary, timing) with 'per_query' from eval/<benchmark>_per_query.npz when the
     evaluation wrote it, 'describe': the shard manifest's batch counts per kind, language and
     language pair and 'false_negatives': the in-batch candidates the loss masked (both None for
     an evaluation-only run), 'curves': the training's scalars over the
     steps, the rows of metrics.jsonl (None if the training wrote none), 'lang_clusters': the
     run's clusters.json (source, spec, {lang: cluster}; None for a run without clusters)}.

  Raises:
    FileNotFoundError: the run left no evaluation results, or several (names the files).
  """
  workdir = pathlib.Path(workdir)
  paths = [workdir / 'eval' / f'{b}.json' for b in sources.SOURCES]
  found = [p for p in paths if p.exists()]
  if len(found) != 1:
    raise FileNotFoundError(f'{workdir}: expected the results of one benchmark evaluation, one of '
                            f'{", ".join(str(p) for p in paths)}; found {len(found)}. Did the run '
                            f'end early? See the logs in {workdir}')
  results = io.read_json(found[0])
  per_query = found[0].with_name(f'{found[0].stem}_per_query.npz')
  if per_query.exists():  # written beside the JSON by hbt.eval.run.write_report
    results['per_query'] = eval_report.read_per_query(per_query)
  manifests = [input_pipeline.read_manifest(p.parent)
               for p in sorted(workdir.glob(f'shards/*/{input_pipeline.MANIFEST}'))]
  curves = workdir / 'metrics.jsonl'  # one JSON object per write: {"step": N, "<name>": v}
  rows = None
  if curves.exists():
    rows = [row for _, row in io.read_jsonl(curves)]
  manifest = manifests[-1] if manifests else {}
  clusters = workdir / 'clusters.json'  # hbt.train.loop.lang_clusters: the run's language clusters
  return {'results': results, 'describe': manifest.get('describe'),
          'false_negatives': manifest.get('false_negatives'), 'curves': rows,
          'lang_clusters': io.read_json(clusters) if clusters.exists() else None}


def per_query_ap(results: dict) -> dict | None:
  """Per-query AP per setting, aligned on each language's queries, from results['per_query'].

  results['per_query'] is the evaluation's layout: 'queries': {X: {'qids': [Q]}} (every query of
  language X), 'pairs': {'X-Y': {'qids': [n], 'ap': [n]}} (the queries of X with an answer in Y)
  and 'multi': {X: {'qids': [n], 'ap': [n]}}.

  Returns:
    None if the results carry no per-query figures, else {'qids': every query id of the
    benchmark, sorted, and for 'mono', 'cross', 'multi': {X: [AP of each of those questions asked
    in language X]}}: mono on X-X, cross the mean over the languages Y != X that hold the answer,
    multi in the pool; NaN where X lacks the question or it has no answer in the setting.
  """
  per_query = results.get('per_query')
  if not per_query:
    return None
  langs = results['langs']
  qids = sorted({str(q) for x in langs for q in per_query['queries'][x]['qids']})
  position = {q: i for i, q in enumerate(qids)}

  def aligned(entry):
    out = np.full(len(qids), np.nan)
    out[[position[str(q)] for q in entry['qids']]] = entry['ap']
    return out

  out = {'qids': qids, 'mono': {}, 'cross': {}, 'multi': {}}
  for x in langs:
    out['mono'][x] = aligned(per_query['pairs'][f'{x}-{x}'])
    others = [aligned(per_query['pairs'][f'{x}-{y}']) for y in langs if y != x]
    with warnings.catch_warnings():  # a query with no cross-lingual answer gets NaN
      warnings.simplefilter('ignore', category=RuntimeWarning)
      out['cross'][x] = np.nanmean(others, axis=0) if others else np.full(len(qids), np.nan)
    out['multi'][x] = aligned(per_query['multi'][x])
  return out


def train_langs(config) -> list[str]:
  """The languages of the run's training pairs (for the seen / unseen split of the report)."""
  d = config.data
  if d.train_langs:
    return [lang for lang in sources.split_langs(d.train_langs) if lang]
  if d.train in sources.SOURCES:
    return list(sources.SOURCES[d.train].langs)
  return []


def machine() -> dict:
  """The CPU this run used: model name, cores, bf16 matrix flags, load average."""
  cpu, flags = platform.processor(), []
  try:
    info = pathlib.Path('/proc/cpuinfo').read_text().splitlines()
  except OSError:
    info = []
  for line in info:
    if line.startswith('model name'):
      cpu = line.split(':', 1)[1].strip()
    if line.startswith('flags'):
      flags = [f for f in ('avx512_bf16', 'amx_bf16') if f in line.split()]
      break
  return {'cpu': cpu, 'cores': os.cpu_count(), 'bf16_flags': flags,
          'load_avg': [round(x, 2) for x in os.getloadavg()]}


def git_commit() -> str:
  """The commit of the code that ran ('' outside a git checkout)."""
  try:
    return subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def _rounded(value, digits=DIGITS):
  if isinstance(value, dict):
    return {k: _rounded(v, digits) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_rounded(v, digits) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if not np.isfinite(value) else round(float(value), digits)
  return value


def groups(langs, seen) -> dict[str, list[str]]:
  """'all', 'seen' and 'unseen' evaluation languages (empty groups left out)."""
  out = {'all': list(langs), 'seen': [l for l in langs if l in seen],
         'unseen': [l for l in langs if l not in seen]}
  return {k: v for k, v in out.items() if v}


def make_summary(run: dict, config, outputs: dict, timing: dict) -> dict:
  """The committed summary of one run.

  Args:
    run: the sweep's description of the run (sweep.runs): 'sweep', 'name', 'direction', 'arm',
      'seed', 'config' (its config file) and 'overrides' (every override it was given).
    config: the run's effective config (sweep.run_config).
    outputs: read_run_outputs of the run's workdir.
    timing: wall seconds of the run's stages, e.g. {'train_s': ..., 'eval_s': ...}.
  """
  results = outputs['results']
  langs = results['langs']
  seen = train_langs(config)
  # The group metric: every setting restricted to the group (multi on the group's sub-pool).
  summary = {name: evaluate.group_results(results['per_query'], group)['summary']
             for name, group in groups(langs, seen).items()}
  t = config.train
  out = {
      'format_version': FORMAT_VERSION,
      **{k: run[k] for k in ('sweep', 'name', 'direction', 'arm', 'seed')},
      'config': run['config'],
      'overrides': run['overrides'],
      'train_data': config.data.train,
      'benchmark': results['benchmark'],
      'budget': {'steps': t.steps, 'batch_size': t.batch_size, 'pairs': t.steps * t.batch_size,
                 'learning_rate': t.learning_rate, 'warmup_steps': t.warmup_steps,
                 'loss_temperature': t.loss_temperature, 'strategy': t.strategy,
                 'alpha': t.alpha, 'eval_langs': ','.join(langs),
                 'model': build.describe(config.model)},
      'langs': langs,
      'train_langs': seen,
      'groups': groups(langs, seen),
      'group_metric': evaluate.GROUP_METRIC,
      'summary': _rounded(summary),
      'pairs': _rounded(results['pairs']),
      'multi': _rounded(results['multi']),
      'describe': outputs.get('describe'),
      'false_negatives': outputs.get('false_negatives'),
      'lang_clusters': outputs.get('lang_clusters'),
      'curves': _rounded(outputs.get('curves')),
      'timing': _rounded({**timing, **{f'eval_{k}': v for k, v in
                                        results.get('timing', {}).items()}}, 2),
      'machine': machine(),
      'commit': git_commit(),
      'finished': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  per_query = per_query_ap(results)
  if per_query is not None:
    out['per_query'] = {k: (v if k == 'qids' else _rounded(v, PER_QUERY_DIGITS))
                        for k, v in per_query.items()}
  return out


def write(path: str | os.PathLike, summary: dict) -> None:
  """Writes a summary as gzipped JSON, atomically (mtime 0: same content, same bytes)."""
  data = json.dumps(summary, sort_keys=True, separators=(',', ':')).encode()
  io.write_atomic(path, gzip.compress(data, mtime=0))


def read(path: str | os.PathLike) -> dict:
  """A summary written by `write`; names the file when it is not one."""
  try:
    return json.loads(gzip.decompress(pathlib.Path(path).read_bytes()))
  except (OSError, EOFError, ValueError) as e:
    raise ValueError(f'{path}: not a readable run summary ({e})') from e
