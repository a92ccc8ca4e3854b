"""Checkpoints with orbax: its policies decide when to save and what to keep.

Orbax saves every `every` steps and at the last step (save-decision policies), keeps the N most
recent plus the best by validation loss (`best_fn`, preservation policies), and saves
asynchronously: training goes on while the arrays are written, and the next save (or
`wait_until_finished`) waits for the one before.

A checkpoint holds the step, the trainable params and the optimizer state. Frozen params (the word
embeddings when frozen) never change, so they are not written again: they come from the pretrained
model. Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save keeps its last good checkpoint.

`bind_fields` ties the checkpoints to the config that made them (`checkpoints/run_fields.json`), so
a run under a changed config (another alpha, strategy, seed, ...) refuses to resume from them.
"""

from collections.abc import Mapping
import json
import math
import os

from etils import epath
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp
from orbax.checkpoint.checkpoint_managers import save_decision_policy as sdp

from hbt import io

VAL_METRIC = 'val_loss'
RUN_FIELDS = 'run_fields.json'


def _val_loss(metrics) -> float:
  """The ranking value of a checkpoint's metrics: its val loss; +inf (the worst) without one."""
  return metrics.get(VAL_METRIC, math.inf)


def checkpoint_dir(workdir) -> epath.Path:
  """workdir/checkpoints; a local workdir is made absolute (orbax needs it), gs:// stays remote."""
  path = io.path(workdir)
  return (io.path(os.path.abspath(path)) if io.is_local(path) else path) / 'checkpoints'


def _flat(fields: Mapping, prefix: str = '') -> dict:
  """Nested mappings as {'a.b': leaf}; lists and tuples compare as lists."""
  out = {}
  for key, value in fields.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def bind_fields(workdir, fields: Mapping) -> None:
  """Ties workdir's checkpoints to `fields` (everything that makes the run); call before restoring.

  With no checkpoint in workdir/checkpoints, (re)writes its run_fields.json from `fields`
  (atomically). With checkpoints, compares `fields` with the stored ones.

  Raises:
    ValueError: naming each differing field with its stored and new value, when the checkpoints
      were made under other fields, or when checkpoints exist without a run_fields.json.
  """
  folder = checkpoint_dir(workdir)
  path = folder / RUN_FIELDS
  new = json.loads(json.dumps(fields, sort_keys=True))  # tuples -> lists, as stored
  has_checkpoints = folder.exists() and any(p.name.isdigit() for p in folder.iterdir())
  if not has_checkpoints:
    io.write_json(path, new)
    return
  if not path.exists():
    raise ValueError(f'{folder} holds checkpoints but no {RUN_FIELDS}, so the config that made '
                     'them is unknown: use another --workdir, or delete that folder to start over')
  old = io.read_json(path)
  a, b = _flat(old), _flat(new)
  diff = [f'{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}'
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if diff:
    raise ValueError(f'{folder} holds checkpoints of another run; differing fields (stored -> '
                     f'this config): {"; ".join(diff)}. Use another --workdir, or delete that '
                     'folder to start over.')


def manager(workdir, keep: int, every: int = 1, last_step: int | None = None,
            asynchronous: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager in workdir/checkpoints.

  Args:
    workdir: the run's folder (local or gs://).
    keep: how many recent checkpoints to keep (the best by val loss is kept as well).
    every: save when the step is a multiple of it.
    last_step: also save at this step (the end of training).
    asynchronous: write in the background (`save` returns before the files are complete; the
      training loop's choice).
  """
  saving = sdp.AnySavePolicy([sdp.FixedIntervalPolicy(every)] + (
      [sdp.SpecificStepsPolicy([last_step])] if last_step is not None else []))
  policy = pp.AnyPreservationPolicy([
      pp.LatestN(n=keep),
      pp.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
               keep_checkpoints_without_metrics=False),
  ])
  # best_fn also makes orbax write each checkpoint's metrics to disk, so a resumed run still
  # knows which checkpoint is best.
  options = ocp.CheckpointManagerOptions(save_decision_policy=saving, preservation_policy=policy,
                                         best_fn=_val_loss, best_mode='min',
                                         enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _saved(state) -> dict:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def save(mngr: ocp.CheckpointManager, state, val_loss: float | None = None) -> bool:
  """Saves the state at its step if the manager's policy says so; returns whether it did.

  `val_loss` is the validation loss measured at this step, if any (it ranks the checkpoint). A
  step without one is saved with empty metrics, not none (for which orbax, tracking the best, warns
  at every save): it ranks last, and `best_step` skips it.
  Asynchronous managers return before the files are complete: `mngr.wait_until_finished()`.
  """
  step = int(state.step)
  if not mngr.should_save(step):
    return False
  metrics = {} if val_loss is None else {VAL_METRIC: float(val_loss)}
  return mngr.save(step, args=ocp.args.StandardSave(_saved(state)), metrics=metrics)


def restore(mngr: ocp.CheckpointManager, state, step: int):
  """The state at checkpoint `step`, placed with the shardings of `state`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved(state))
  restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  return state.replace(step=restored['step'], params=restored['params'],
                       opt_state=restored['opt_state'])


def restore_latest(mngr: ocp.CheckpointManager, state):
  """The state at the latest checkpoint, or `state` itself if there is none."""
  step = mngr.latest_step()
  return state if step is None else restore(mngr, state, step)


def best_step(mngr: ocp.CheckpointManager) -> int | None:
  """The kept step with the lowest validation loss, or None if no checkpoint has one."""
  scored = []
  for step in mngr.all_steps():
    metrics = mngr.metrics(step)
    if metrics and VAL_METRIC in metrics:
      scored.append((metrics[VAL_METRIC], step))
  return min(scored)[1] if scored else None
