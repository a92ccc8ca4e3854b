"""Runs of the real entry point (python -m hbt.main) in subprocesses, for the end-to-end tests.

One process, or several forming one multi-host JAX job over localhost (jax.distributed with a
coordinator on a free port), each with its own number of simulated CPU devices; and what a run
leaves behind (checkpointed params, TensorBoard scalars) read back for comparison.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_overrides(checkpoint_dir, data_dir, steps: int) -> dict:
  """Config overrides (dotted field -> value) for a fast run of the tiny model (test_weights)."""
  return {'model.source': 'hf', 'model.checkpoint': str(checkpoint_dir), 'model.dtype': 'float32',
          'data.dir': str(data_dir), 'train.steps': steps, 'train.batch_size': 8,
          'train.warmup_steps': 2, 'train.learning_rate': 1e-3, 'train.max_query_length': 16,
          'train.max_passage_length': 32, 'train.log_every': 2, 'train.checkpoint_every': 2,
          'eval.progress': False, 'data.train_langs': 'en,de,es', 'data.val_fraction': 0.2,
          'eval.langs': 'en,de,th', 'evals.val.every': 2, 'evals.val.batches': 2,
          'evals.val_map.every': 3, 'evals.val_map.max_ids': 24}


def tiny(checkpoint_dir, data_dir, steps, **extra) -> list[str]:
  """The --config.* flags of `tiny_overrides`, plus `extra`."""
  overrides = {**tiny_overrides(checkpoint_dir, data_dir, steps), **extra}
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def _environ(devices: int, env=None) -> dict:
  environ = dict(os.environ, **(env or {}))
  environ.pop('XLA_FLAGS', None)  # one device, as a user would run it, unless `devices` says
  if devices > 1:
    environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return environ


def hbt_main(workdir, *overrides, env=None, devices: int = 1, **popen) -> subprocess.Popen:
  """Starts python -m hbt.main in workdir with `overrides`; stdout and stderr in one text pipe."""
  args = [sys.executable, '-m', 'hbt.main', '--config=configs/xquad.py', f'--workdir={workdir}',
          *overrides]
  popen = {'stdout': subprocess.PIPE, 'stderr': subprocess.STDOUT, **popen}
  return subprocess.Popen(args, cwd=REPO, env=_environ(devices, env), text=True, **popen)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def log_path(workdir, process: int) -> pathlib.Path:
  return pathlib.Path(f'{workdir}.process{process}.log')


def hbt_job(workdir, *overrides, processes: int, devices: int,
            heartbeat_timeout: int = 100) -> list[subprocess.Popen]:
  """Starts one multi-host job: `processes` hbt.main processes with `devices` CPU devices each.

  Process i writes its console to log_path(workdir, i) (a file: an undrained pipe would block).
  """
  coordinator = f'localhost:{free_port()}'
  procs = []
  for i in range(processes):
    with open(log_path(workdir, i), 'w') as log:
      procs.append(hbt_main(workdir, *overrides, f'--coordinator={coordinator}',
                            f'--num_processes={processes}', f'--process_id={i}',
                            f'--heartbeat_timeout={heartbeat_timeout}', devices=devices,
                            stdout=log))
  return procs


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
  """Waits for a hbt_main process; asserts it succeeded; returns its output."""
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]
  return out


def finish_job(workdir, procs, timeout: float = 600) -> list[str]:
  """Waits for every process of a hbt_job; asserts each succeeded; returns their logs."""
  deadline = time.monotonic() + timeout
  for proc in procs:
    proc.wait(timeout=max(deadline - time.monotonic(), 1))
  logs = [log_path(workdir, i).read_text() for i in range(len(procs))]
  for i, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f'process {i} exited with {proc.returncode}:\n{log[-4000:]}'
  return logs


def restore_params(workdir) -> tuple[int, dict]:
  """(latest checkpointed step, its params) in workdir/checkpoints, on this process's first device.

  The run may have had other devices (or processes) than this one: the arrays are placed anew.
  """
  mngr = ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints',
                               item_handlers=ocp.StandardCheckpointHandler())
  step = mngr.latest_step()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        mngr.item_metadata(step).tree)
  return step, mngr.restore(step, args=ocp.args.StandardRestore(target))['params']


def assert_params_equal(a: dict, b: dict, atol: float = 0.0) -> None:
  """Equal trees of arrays: bitwise, or within `atol`."""
  flat_a, flat_b = ocp.tree.to_flat_dict(a), ocp.tree.to_flat_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    x, y = np.asarray(flat_a[key]), np.asarray(flat_b[key])
    if atol:
      np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=str(key))
    else:
      np.testing.assert_array_equal(x, y, err_msg=str(key))


def tensorboard_scalars(workdir) -> dict[tuple[int, str], float]:
  """{(step, tag): value} of every scalar in workdir/tensorboard's event files."""
  out = {}
  for path in sorted(pathlib.Path(workdir, 'tensorboard').rglob('events.out.tfevents.*')):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField('tensor'):
          out[event.step, value.tag] = float(tf.make_ndarray(value.tensor))
        elif value.HasField('simple_value'):
          out[event.step, value.tag] = value.simple_value
  return out
