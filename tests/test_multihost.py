"""Multi-host: 2 processes on this machine (jax.distributed over localhost, CPU) against 1 process.

The same job, the same global batch and the same 2 CPU devices in all: once as 1 process with 2
devices, once as 2 processes with 1 device each. Training losses, validation figures, evaluation
metrics and trained params must agree. Checkpoints come from both processes (orbax); the reports,
TensorBoard and console tables from process 0 only. Then a fault: one process SIGKILLed after a
checkpoint, the other stops by itself, both restart and end with the uninterrupted run's params.
"""

import json
import signal
import time

import pytest

from tests import runs
from tests import test_train

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
      'mode': mode, 'eval.langs': 'en,de', 'train.log_every': 1, 'evals.val.every': 8,
      'evals.val_map.every': 8, 'train.checkpoint_every': CHECKPOINT_EVERY,
      'eval.progress': True})


@pytest.fixture(scope='module')
def one_and_two(tiny_checkpoint, data_dir, tmp_path_factory):
  """The job (mode 'all') run as 1 process with 2 devices and as 2 processes with 1 device each."""
  root = tmp_path_factory.mktemp('multihost')
  flags = job_flags(tiny_checkpoint, data_dir, 'all')
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


def scalars(workdir) -> dict[str, float]:
  """metrics.jsonl as {'<step>/<name>': value}, without the timing scalars."""
  return {f'{r["step"]}/{k}': v for r in test_train.read_metrics(workdir) for k, v in r.items()
          if k != 'step' and not any(t in k for t in TIMING)}


def test_two_processes_equal_one(one_and_two):
  one, one_out, two, (log0, log1), pid0 = one_and_two
  # Training losses, validation and evaluation figures, step by step (every scalar written).
  a, b = scalars(one), scalars(two)
  for name, steps in (('train/loss', range(1, STEPS + 1)), ('val/loss', (0, 8, 16)),
                      ('val/accuracy', (0, 8, 16)), ('val_map/mono/ap', (0, 8, 16)),
                      ('zero_shot/mono/ap', (0, 16)), ('zero_shot/multi/ap', (0, 16))):
    assert [k for k in a if k.split('/', 1)[1] == name] == [f'{s}/{name}' for s in steps], name
  assert_numbers_close(a, b, 'metrics.jsonl')

  # Evaluation reports before and after training: every metric of every language pair.
  reports = sorted(p.name for p in (one / 'eval').glob('*.json'))
  assert {'xquad_r_before.json', 'xquad_r_after.json'} <= set(reports), reports
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
  assert (two / 'checkpoints' / str(STEPS) / 'default' / 'ocdbt.process_1').is_dir()
  runs.assert_params_equal(params_a, params_b, atol=1e-6)

  # Reports and logs from process 0 only: the same files as the 1-process run (checkpoint
  # internals aside), TensorBoard files of process 0 alone, metrics in process 0's console only.
  def files(workdir):
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob('*')
                  if p.is_file() and 'checkpoints' not in p.parts and 'tensorboard' not in p.parts)
  assert files(two) == files(one)
  event_files = [p.name for p in (two / 'tensorboard').rglob('events.out.tfevents.*')]
  assert event_files and all(f'.{pid0}.' in name for name in event_files), event_files
  assert 'train/loss' in log0 and 'train/loss' in one_out and 'text/s' in log0
  assert 'train/loss' not in log1 and 'zero_shot' not in log1 and 'text/s' not in log1


def test_sigkill_one_process_then_restart_both(one_and_two, tiny_checkpoint, data_dir,
                                               tmp_path):
  two = one_and_two[2]
  flags = job_flags(tiny_checkpoint, data_dir, 'train')
  workdir = tmp_path / 'killed'
  # A short heartbeat timeout, so that the survivor stops soon; long enough for a loaded machine.
  procs = runs.hbt_job(workdir, *flags, processes=PROCESSES, devices=DEVICES,
                       heartbeat_timeout=30)
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

  logs = runs.finish_job(workdir, runs.hbt_job(workdir, *flags, processes=PROCESSES,
                                                devices=DEVICES))
  assert f'resuming from the checkpoint at step {killed_at}' in logs[0]
  step_a, straight = runs.restore_params(two)
  step_b, resumed = runs.restore_params(workdir)
  assert step_a == step_b == STEPS
  runs.assert_params_equal(straight, resumed)
  # Every step's loss once, as the uninterrupted run's (the killed run's later lines dropped).
  losses = [{k: v for k, v in scalars(w).items() if k.endswith('/train/loss')}
            for w in (two, workdir)]
  assert len(losses[1]) == STEPS and losses[1] == losses[0]
