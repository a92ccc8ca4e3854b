"""Multi-host: 2 processes on this machine (jax.distributed over localhost, CPU) against 1 process.

The same job, the same global batch and the same 2 CPU devices in all: once as 1 process with 2
devices, once as 2 processes with 1 device each. Training losses, validation figures, evaluation
metrics and trained params must agree. Checkpoints come from both processes (orbax); the reports,
TensorBoard and console tables from process 0 only. Then a fault: one process SIGKILLed after a
checkpoint, the other stops by itself, both restart and end with the uninterrupted run's params.
"""

import json
import os
import signal
import time

import pytest

from tests import runs

STEPS, CHECKPOINT_EVERY = 16, 4
# 2 devices in all: one all-reduce adds 2 numbers, the same sum in either order, so 1 process
# with 2 devices and 2 processes with 1 each make the same updates (with 4 devices, gloo's and
# XLA's summation orders differ in the last bit, and Adam makes that ~1e-5 after 16 steps).
PROCESSES, DEVICES = 2, 1
# Scalars and report fields that measure time, not the model: they differ between any two runs.
TIMING = ('per_s', 'per_sec', 'uptime', 'timing', 'wall_s', 'train_s', 'encode_s', 'score_s')


def job_flags(tiny_checkpoint, data_dir, mode: str) -> list[str]:
  """The job every run here makes (the training fields are shared by every mode)."""
  return runs.tiny(tiny_checkpoint, data_dir, STEPS, **{
      'mode': mode, 'eval.langs': 'en,de', 'train.log_every': 1, 'train.val_every': 8,
      'train.checkpoint_every': CHECKPOINT_EVERY})


@pytest.fixture(scope='module')
def one_and_two(tiny_checkpoint, data_dir, tmp_path_factory):
  """The job (mode 'all') run as 1 process with 2 devices and as 2 processes with 1 device each."""
  root = tmp_path_factory.mktemp('multihost')
  flags = job_flags(tiny_checkpoint, data_dir, os.environ.get('MH_MODE', 'all'))
  one = runs.hbt_main(root / 'one', *flags, devices=PROCESSES * DEVICES)
  two = runs.hbt_job(root / 'two', *flags, processes=PROCESSES, devices=DEVICES)
  logs = runs.finish_job(root / 'two', two)
  return root / 'one', runs.finish(one), root / 'two', logs, two[0].pid


def numbers(tree, prefix: str = '') -> dict[str, float]:
  """The numeric leaves of a JSON tree as {'a/b/0': value}, without the timing fields."""
  if isinstance(tree, dict):
    items = tree.items()
  elif isinstance(tree, list):
    items = enumerate(tree)
  else:
    return {prefix: float(tree)} if isinstance(tree, (int, float)) else {}
  out = {}
  for key, value in items:
    if not any(t in str(key) for t in TIMING):
      out.update(numbers(value, f'{prefix}/{key}' if prefix else str(key)))
  return out


def assert_numbers_close(a: dict, b: dict, what: str, atol: float = 1e-5) -> None:
  assert a.keys() == b.keys(), f'{what}: {sorted(a.keys() ^ b.keys())}'
  worst = max(a, key=lambda k: abs(a[k] - b[k]))
  assert abs(a[worst] - b[worst]) <= atol, f'{what}: {worst} is {a[worst]} and {b[worst]}'


def test_two_processes_equal_one(one_and_two):
  one, one_out, two, (log0, log1), pid0 = one_and_two
  # Training losses, validation figures (and any other scalar), step by step.
  scalars = [{k: v for k, v in runs.tensorboard_scalars(w).items()
              if not any(t in k[1] for t in TIMING)} for w in (one, two)]
  tags = {tag for _, tag in scalars[0]}
  assert {'loss', 'val_loss', 'val_accuracy'} <= tags, tags
  assert sorted(step for step, tag in scalars[0] if tag == 'loss') == list(range(1, STEPS + 1))
  assert sorted(step for step, tag in scalars[0] if tag == 'val_loss') == [8, 16]
  assert_numbers_close(*[{f'{s}/{t}': v for (s, t), v in x.items()} for x in scalars], 'scalars')

  # Evaluation reports before and after training: every metric of every language pair.
  reports = sorted(p.name for p in (one / 'eval').glob('*.json'))
  assert 'xquad_r_before.json' in reports and 'xquad_r_after.json' in reports
  assert reports == sorted(p.name for p in (two / 'eval').glob('*.json'))
  for name in reports:
    a, b = [numbers(json.loads((w / 'eval' / name).read_text())) for w in (one, two)]
    assert len(a) > 20, name
    assert_numbers_close(a, b, name)
  before = json.loads((two / 'eval' / 'xquad_r_before.json').read_text())
  assert set(before['multi']) == {'en', 'de'}

  # Trained params, from the checkpoints both processes wrote.
  step_a, params_a = runs.restore_params(one)
  step_b, params_b = runs.restore_params(two)
  assert step_a == step_b == STEPS
  assert list((two / 'checkpoints' / str(STEPS) / 'default').glob('ocdbt.process_1'))
  runs.assert_params_equal(params_a, params_b, atol=1e-6)

  # Reports and logs from process 0 only: the same files as the 1-process run (checkpoint
  # internals aside), TensorBoard files of process 0 alone, tables in process 0's console only.
  def files(workdir):
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob('*')
                  if p.is_file() and 'checkpoints' not in p.parts)
  assert [f for f in files(two) if 'tensorboard' not in f] == \
      [f for f in files(one) if 'tensorboard' not in f]
  event_files = [p.name for p in (two / 'tensorboard').rglob('events.out.tfevents.*')]
  assert event_files and all(f'.{pid0}.' in name for name in event_files), event_files
  assert 'after training' in log0 and 'after training' in one_out
  assert 'after training' not in log1 and 'step 1/' not in log1


def test_sigkill_one_process_then_restart_both(one_and_two, tiny_checkpoint, data_dir,
                                               tmp_path):
  two = one_and_two[2]
  flags = job_flags(tiny_checkpoint, data_dir, 'train')
  workdir = tmp_path / 'killed'
  procs = runs.hbt_job(workdir, *flags, processes=PROCESSES, devices=DEVICES, heartbeat_timeout=15)
  first = workdir / 'checkpoints' / str(CHECKPOINT_EVERY)  # orbax renames it there when complete
  deadline = time.monotonic() + 600
  while not first.exists() and time.monotonic() < deadline and procs[1].poll() is None:
    time.sleep(0.1)
  assert first.exists(), runs.log_path(workdir, 1).read_text()[-4000:]
  procs[1].send_signal(signal.SIGKILL)
  assert procs[1].wait(timeout=60) == -signal.SIGKILL
  # The survivor finds its peer gone (no heartbeat, or a broken collective) and stops itself.
  assert procs[0].wait(timeout=180) != 0
  killed_at, _ = runs.restore_params(workdir)
  assert CHECKPOINT_EVERY <= killed_at < STEPS

  runs.finish_job(workdir, runs.hbt_job(workdir, *flags, processes=PROCESSES, devices=DEVICES))
  step_a, straight = runs.restore_params(two)
  step_b, resumed = runs.restore_params(workdir)
  assert step_a == step_b == STEPS
  runs.assert_params_equal(straight, resumed)
