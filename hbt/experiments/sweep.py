"""Runs a sweep of hbt.main runs one after another; a second call resumes it.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/strategies.py --workdir=runs/strategies

A sweep file (configs/sweeps/*.py) defines `get_sweep()`, a dict of override lists:
  name        the sweep's name (the folder of its summaries: docs/results/runs/<name>/);
  config      the base config file, e.g. 'configs/default.py' (or 'file.py:arg');
  budget      overrides shared by every run (steps, batch size...);
  directions  {name: overrides}: what the runs train on and are evaluated on; the key 'config'
              replaces the base config file for the direction's runs, e.g. 'configs/mlqa.py';
  arms        {name: overrides}: what is compared (strategies, alphas, extra losses...);
  seeds       the values of config.seed; every arm runs once per seed and direction;
  contrasts   (arm, arm) pairs that the report tests against each other (optional).
Optional keys for the report (hbt.experiments.report), e.g. in configs/sweeps/alpha.py:
  x_axis        an override key that every arm sets to a number, e.g. 'train.alpha': the report
                labels the arms by it and plots the final figures against it;
  threshold     a fraction f in (0, 1]: the report gives each arm's steps to reach
                start + f x (best - start) of the validation curves (report.THRESHOLD_CURVES);
  low_resource  languages that the report marks in its per-language tables, and whose mean MRR
                it gives (e.g. ('hi', 'th', 'vi', 'el', 'tr')).

Runs are the product directions x arms x seeds, ordered seed-major (all arms of seed 0, then of
seed 1...), so that a sweep cut short still compares every arm. Before them, each direction's
pretrained model is evaluated once ('<direction>.zero_shot'), the 'before' of every run in it.
Each run is two subprocesses of hbt.main in <workdir>/<run>: mode 'train' (resumes from its
checkpoints after a crash), then mode 'eval' of the trained model. When a run is done its summary
(see hbt.experiments.summary) is written to the summaries folder, and its checkpoints are deleted
(--keep_checkpoints keeps them). A run whose summary exists is skipped: commit the summaries and
any machine resumes the sweep from the repository.
"""

import fnmatch
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import ml_collections  # noqa: E402

from hbt import config_lib  # noqa: E402
from hbt import io  # noqa: E402
from hbt.experiments import summary as summary_lib  # noqa: E402

ZERO_SHOT, SPEC_FILE = summary_lib.ZERO_SHOT, summary_lib.SPEC_FILE
REQUIRED = ('name', 'config', 'budget', 'directions', 'arms', 'seeds')


class SweepError(ValueError):
  """A sweep file that cannot be run."""


def _load_module(path: str, what: str):
  file = pathlib.Path(path)
  if not file.exists():
    raise SweepError(f'{what} {path} does not exist')
  spec = importlib.util.spec_from_file_location(f'_hbt_{what}_{file.stem}', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str) -> ml_collections.ConfigDict:
  """A config file's get_config(), or get_config(arg) for 'path.py:arg'."""
  path, _, arg = path.partition(':')
  module = _load_module(path, 'config')
  return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of config with {'train.steps': 100, ...} set; names a field that does not exist."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    try:
      for part in parents:
        node = node[part]
      node[leaf]  # pylint: disable=pointless-statement
    except (KeyError, AttributeError, TypeError) as e:
      raise SweepError(f'override {key}={value!r}: config has no field {key}') from e
    node[leaf] = value
  return config


def validate(spec: dict) -> None:
  """Raises SweepError naming the first bad field of a sweep definition."""
  for key in REQUIRED:
    if key not in spec:
      raise SweepError(f'sweep is missing {key!r} (needs {", ".join(REQUIRED)})')
  for key in ('budget', 'directions', 'arms'):
    if not isinstance(spec[key], dict) or (key != 'budget' and not spec[key]):
      raise SweepError(f'sweep {key!r} must be a non-empty dict, got {spec[key]!r}')
  names = [*spec['directions'], *spec['arms']]
  for name in names:
    if not name or '.' in name or '/' in name or name == ZERO_SHOT:
      raise SweepError(f'sweep name {name!r} must be non-empty, without "." or "/", and not '
                       f'{ZERO_SHOT!r}')
  seeds = spec['seeds']
  if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) or len(set(seeds)) < len(
      seeds):
    raise SweepError(f'sweep seeds must be distinct integers >= 0, got {seeds!r}')
  for a, b in spec.get('contrasts', ()):
    if a not in spec['arms'] or b not in spec['arms']:
      raise SweepError(f'contrast ({a}, {b}) names an arm the sweep does not have')
  _validate_report_keys(spec)
  for run in runs(spec):
    try:
      config_lib.validate(run_config(run))
    except config_lib.ConfigError as e:
      raise SweepError(f'run {run["name"]}: {e}') from e


def _validate_report_keys(spec: dict) -> None:
  """The optional report keys: x_axis, threshold, low_resource (see the module docstring)."""
  x_axis = spec.get('x_axis')
  if x_axis is not None:
    for arm, overrides in spec['arms'].items():
      value = overrides.get(x_axis) if isinstance(x_axis, str) else None
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepError(f'sweep x_axis {x_axis!r}: arm {arm!r} must set it to a number, got '
                         f'{value!r}')
  threshold = spec.get('threshold')
  if threshold is not None and (isinstance(threshold, bool)
                                or not isinstance(threshold, (int, float))
                                or not 0 < threshold <= 1):
    raise SweepError(f'sweep threshold must be a fraction in (0, 1], got {threshold!r}')
  low = spec.get('low_resource', ())
  if isinstance(low, str) or not all(isinstance(l, str) and l for l in low):
    raise SweepError(f'sweep low_resource must be a tuple of language codes, got {low!r}')


def load_sweep(path: str) -> dict:
  """The validated sweep definition of a sweep file."""
  spec = dict(_load_module(path, 'sweep').get_sweep())
  spec.setdefault('contrasts', ())
  spec.setdefault('file', path)
  validate(spec)
  return spec


def runs(spec: dict) -> list[dict]:
  """Every run of the sweep, in order: the zero-shot evaluations, then seed-major.

  A run: {'sweep', 'name', 'direction', 'arm', 'seed' (None for zero-shot), 'config' (its base
  config file), 'overrides' (every override, in order: budget, direction, arm, seed)}.
  """
  out = []

  def add(direction, arm, seed, *overrides):
    d = dict(spec['directions'][direction])
    config = d.pop('config', spec['config'])
    merged = {k: v for o in (spec['budget'], d, *overrides) for k, v in o.items()}
    name = f'{direction}.{arm}' + ('' if seed is None else f'.seed{seed}')
    out.append({'sweep': spec['name'], 'name': name, 'direction': direction, 'arm': arm,
                'seed': seed, 'config': config, 'overrides': merged})

  for direction in spec['directions']:
    add(direction, ZERO_SHOT, None)
  for seed in spec['seeds']:
    for direction in spec['directions']:
      for arm, overrides in spec['arms'].items():
        add(direction, arm, seed, overrides, {'seed': seed})
  return out


def run_config(run: dict) -> ml_collections.ConfigDict:
  """The effective config of a run: its base config file with its overrides."""
  return apply_overrides(load_config(run['config']), run['overrides'])


def command(run: dict, workdir: pathlib.Path, mode: str) -> list[str]:
  """The hbt.main command of one stage ('train' or 'eval') of a run."""
  return [sys.executable, '-m', 'hbt.main', f'--config={run["config"]}', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in run['overrides'].items()), f'--config.mode={mode}',
          # Every earlier run of these sweeps trained with dtype 'auto' on an AMD EPYC with
          # avx512_bf16, i.e. in bfloat16; on a CPU without it 'auto' picks float32. Keep bf16.
          '--config.model.dtype=bfloat16']


def _stage(cmd: list[str], log: pathlib.Path) -> float:
  """Runs one command with its output appended to log; returns its wall seconds."""
  log.parent.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  with log.open('a') as f:
    f.write(f'$ {" ".join(cmd)}\n')
    f.flush()
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
  if code:
    tail = '\n'.join(log.read_text(errors='replace').splitlines()[-25:])
    raise RuntimeError(f'{" ".join(cmd[:4])} ... exited with status {code}; the end of {log}:\n'
                       f'{tail}')
  return time.perf_counter() - start


def run_subprocess(spec: dict, run: dict, workdir: pathlib.Path, *,
                   keep_checkpoints: bool = False) -> dict:
  """Runs one run as hbt.main subprocesses in workdir; returns its summary."""
  del spec  # the run holds its config file and overrides
  timing = {}
  if run['arm'] != ZERO_SHOT:
    timing['train_s'] = _stage(command(run, workdir, 'train'), workdir / 'train.log')
  timing['eval_s'] = _stage(command(run, workdir, 'eval'), workdir / 'eval.log')
  summary = summary_lib.make_summary(run, run_config(run), summary_lib.read_run_outputs(workdir),
                                     timing)
  if not keep_checkpoints:
    shutil.rmtree(workdir / 'checkpoints', ignore_errors=True)
  return summary


# The effective settings a summary records (summary.make_summary's 'budget') that a finished run
# must share with the sweep's run of the same name, whatever the defaults of the code now are.
BUDGET_KEYS = ('steps', 'batch_size', 'learning_rate', 'warmup_steps', 'loss_temperature',
               'strategy', 'alpha')


def check_finished(run: dict, path: pathlib.Path) -> None:
  """Raises SweepError if the summary at path was made with another config, other overrides, or
  (a default of the config having changed since) other effective budget settings."""
  done = summary_lib.read(path)
  theirs = {'config': done.get('config'), **done.get('overrides', {})}
  ours = {'config': run['config'], **run['overrides']}
  if run['arm'] == ZERO_SHOT:  # evaluates the pretrained model: training settings do not matter
    theirs = {k: v for k, v in theirs.items() if not k.startswith('train.')}
    ours = {k: v for k, v in ours.items() if not k.startswith('train.')}
  elif 'budget' in done:
    train = run_config(run).train
    for key in BUDGET_KEYS:
      if key in done['budget']:  # compared by value, set by an override or by the default
        theirs.pop(f'train.{key}', None)
        ours.pop(f'train.{key}', None)
        theirs[f'(effective) train.{key}'] = done['budget'][key]
        ours[f'(effective) train.{key}'] = train[key]
  differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
  if differ:
    raise SweepError(
        f'{path} was made with other settings than the sweep now gives run {run["name"]}: '
        + ', '.join(f'{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now' for k in differ)
        + '. Give the changed sweep another name, or move the old summaries away.')


def run_sweep(spec: dict, workdir, summaries, *, run_fn=run_subprocess, only: str = '',
              max_runs: int = 0, dry_run: bool = False, log=print) -> dict:
  """Runs the sweep's unfinished runs in order; returns {'done', 'skipped', 'ran'} run names.

  Args:
    spec: a sweep definition (load_sweep).
    workdir: parent folder of the runs' workdirs.
    summaries: the folder of the summaries (committed); a run with a summary there is skipped.
    run_fn: (spec, run, run_workdir) -> summary; run_subprocess, or a stand-in in tests.
    only: comma-separated glob patterns of run names to consider ('' = all).
    max_runs: stop after running this many (0 = no limit).
    dry_run: log the commands of the unfinished runs, run nothing.
    log: where progress lines go.
  """
  workdir, summaries = pathlib.Path(workdir), pathlib.Path(summaries)
  todo = [r for r in runs(spec)
          if not only or any(fnmatch.fnmatch(r['name'], p) for p in only.split(','))]
  done, skipped, ran, shown = [], [], [], []
  if not dry_run:  # in the sweep's order (arms, directions), for the report
    io.write_atomic(summaries / SPEC_FILE, json.dumps(spec, indent=1).encode())
  for i, run in enumerate(todo):
    path = summaries / f'{run["name"]}.json.gz'
    if path.exists():
      check_finished(run, path)
      skipped.append(run['name'])
      continue
    if max_runs and len(ran) + len(shown) >= max_runs:
      break
    if dry_run:  # what a run without --dry_run would run, --max_runs included
      shown.append(run['name'])
      modes = ['eval'] if run['arm'] == ZERO_SHOT else ['train', 'eval']
      for mode in modes:
        log(' '.join(command(run, workdir / run['name'], mode)))
      continue
    log(f'[{i + 1}/{len(todo)}] {run["name"]}: running in {workdir / run["name"]} '
        f'(logs: train.log, eval.log)')
    start = time.perf_counter()
    summary_lib.write(path, run_fn(spec, run, workdir / run['name']))
    ran.append(run['name'])
    done.append(run['name'])
    log(f'[{i + 1}/{len(todo)}] {run["name"]}: done in {time.perf_counter() - start:.0f} s, '
        f'wrote {path}')
  done += skipped
  log(f'sweep {spec["name"]}: {len(ran)} run now, {len(skipped)} already done, '
      f'{len(runs(spec)) - len(done)} of {len(runs(spec))} left')
  return {'done': done, 'skipped': skipped, 'ran': ran}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run_fn(spec, run, workdir):
    return run_subprocess(spec, run, workdir, keep_checkpoints=_KEEP.value)

  try:
    spec = load_sweep(_SWEEP.value)
    run_sweep(spec, _WORKDIR.value, _SUMMARIES.value or f'docs/results/runs/{spec["name"]}',
              run_fn=run_fn, only=_ONLY.value, max_runs=_MAX_RUNS.value, dry_run=_DRY_RUN.value)
  except SweepError as e:
    print(f'error: {_SWEEP.value}: {e}', file=sys.stderr)
    sys.exit(2)
  except RuntimeError as e:  # a run failed: its command and the end of its log
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that the library imports beside others.
  _SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file, e.g. configs/sweeps/strategies.py.')
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Parent folder of the runs (not kept).')
  _SUMMARIES = flags.DEFINE_string('summaries', None,
                                   'Folder of the run summaries; default docs/results/runs/<name>.')
  _ONLY = flags.DEFINE_string('only', '', 'Comma-separated globs of run names, e.g. "*.seed0".')
  _MAX_RUNS = flags.DEFINE_integer('max_runs', 0, 'Stop after this many runs (0: no limit).')
  _DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands of the unfinished runs.')
  _KEEP = flags.DEFINE_bool('keep_checkpoints', False, "Keep each run's checkpoints.")
  flags.mark_flags_as_required(['sweep', 'workdir'])
  app.run(main)
