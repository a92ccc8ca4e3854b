"""Checkpoints with orbax: the N most recent, plus the best by validation loss.

A checkpoint holds the step, the trainable params and the optimizer state. Frozen params (the word
embeddings when frozen) never change, so they are not written again: they come from the pretrained
model. Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save keeps its last good checkpoint.
"""

import pathlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

VAL_METRIC = 'val_loss'


def _val_loss(metrics) -> float:
  return metrics[VAL_METRIC]


def manager(workdir, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager in workdir/checkpoints keeping `keep` recent and the best by val loss."""
  policy = pp.AnyPreservationPolicy([
      pp.LatestN(n=keep),
      pp.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
               keep_checkpoints_without_metrics=False),
  ])
  # best_fn also makes orbax write each checkpoint's metrics to disk, so a resumed run still
  # knows which checkpoint is best.
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_val_loss,
                                         best_mode='min', enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints', options=options)


def _saved(state) -> dict:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def save(mngr: ocp.CheckpointManager, state, val_loss: float | None = None) -> None:
  """Saves the state at its step (with the val loss, if one was measured at this step)."""
  metrics = None if val_loss is None else {VAL_METRIC: float(val_loss)}
  mngr.save(int(state.step), args=ocp.args.StandardSave(_saved(state)), metrics=metrics,
            force=True)
  mngr.wait_until_finished()


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
