"""Checkpoint retention (N latest plus the best by validation loss) and exact restore."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts

from hbt.train import checkpoint
from hbt.train import step as step_lib


def state_at(step: int) -> step_lib.TrainState:
  params = {'w': jnp.full((3, 2), float(step)), 'b': jnp.arange(2.0) + step}
  return step_lib.TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                             frozen={'word_embeddings': jnp.ones((4, 2))},
                             opt_state={'mu': jax.tree.map(jnp.zeros_like, params)})


def test_keeps_latest_and_best(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  mngr = checkpoint.manager(tmp_path, keep=2)
  for step, val_loss in zip(range(1, 7), [5.0, 1.0, 4.0, None, 3.0, 2.5]):
    checkpoint.save(mngr, state_at(step), val_loss)
  mngr.wait_until_finished()
  assert sorted(mngr.all_steps()) == [2, 5, 6]  # best (val 1.0) + the two most recent
  assert checkpoint.best_step(mngr) == 2 and mngr.latest_step() == 6
  # After a restart the metrics come back from disk: the best is still known and still kept.
  reopened = checkpoint.manager(tmp_path, keep=2)
  assert checkpoint.best_step(reopened) == 2
  checkpoint.save(reopened, state_at(7), None)
  reopened.wait_until_finished()
  assert sorted(reopened.all_steps()) == [2, 6, 7]
  assert checkpoint.best_step(reopened) == 2
  # Saves without a validation loss (steps 4 and 7) do not make orbax warn.
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_unvalidated_checkpoints_never_count_as_best(tmp_path):
  """Only unvalidated saves after the validated one: the validated one stays kept and best."""
  mngr = checkpoint.manager(tmp_path, keep=1)
  for step, val_loss in zip(range(1, 5), [None, 2.0, None, None]):
    checkpoint.save(mngr, state_at(step), val_loss)
  mngr.wait_until_finished()
  assert sorted(mngr.all_steps()) == [2, 4]
  assert checkpoint.best_step(mngr) == 2
  assert checkpoint.best_step(checkpoint.manager(tmp_path, keep=1)) == 2


def test_restore_latest_is_exact(tmp_path):
  mngr = checkpoint.manager(tmp_path, keep=3)
  checkpoint.save(mngr, state_at(7))
  mngr.wait_until_finished()
  fresh = state_at(0)
  restored = checkpoint.restore_latest(checkpoint.manager(tmp_path, keep=3), fresh)
  assert int(restored.step) == 7
  jax.tree.map(np.testing.assert_array_equal, restored.params, state_at(7).params)
  jax.tree.map(np.testing.assert_array_equal, restored.frozen, fresh.frozen)
  assert not list(tmp_path.glob('checkpoints/*tmp*'))


def test_orbax_decides_the_cadence(tmp_path):
  """Every 3 steps and at the last step (7), nothing in between."""
  mngr = checkpoint.manager(tmp_path, keep=10, every=3, last_step=7, asynchronous=True)
  saved = [step for step in range(1, 8) if checkpoint.save(mngr, state_at(step))]
  mngr.wait_until_finished()
  assert saved == [3, 6, 7] and sorted(mngr.all_steps()) == [3, 6, 7]


def test_restore_without_checkpoint_returns_state(tmp_path):
  fresh = state_at(0)
  assert checkpoint.restore_latest(checkpoint.manager(tmp_path, keep=1), fresh) is fresh


def save_and_wait(workdir, state):
  mngr = checkpoint.manager(workdir, keep=1)
  checkpoint.save(mngr, state)
  mngr.wait_until_finished()


FIELDS = {'batches': {'strategy': 'hybrid', 'alpha': 0.5, 'seed': 0, 'buckets': (16, 32)},
          'train': {'learning_rate': 3e-5}}


def test_resume_under_changed_fields_is_refused(tmp_path):
  checkpoint.bind_fields(tmp_path, FIELDS)
  mngr = checkpoint.manager(tmp_path, keep=2)
  checkpoint.save(mngr, state_at(4))
  mngr.wait_until_finished()
  checkpoint.bind_fields(tmp_path, FIELDS)  # same run: resumes
  changed = {'batches': {**FIELDS['batches'], 'strategy': 'x_y', 'alpha': 0.3},
             'train': FIELDS['train']}
  with pytest.raises(ValueError, match=r"batches\.alpha: 0\.5 -> 0\.3; "
                     r"batches\.strategy: 'hybrid' -> 'x_y'\. Use another --workdir"):
    checkpoint.bind_fields(tmp_path, changed)
  with pytest.raises(ValueError, match=r'train\.lr_schedule: .<absent>. -> .cosine.'):
    checkpoint.bind_fields(tmp_path, {**FIELDS, 'train': {**FIELDS['train'],
                                                          'lr_schedule': 'cosine'}})


def test_fields_are_rebound_while_no_checkpoint_exists(tmp_path):
  checkpoint.bind_fields(tmp_path, FIELDS)  # a run that died before its first checkpoint
  other = {**FIELDS, 'batches': {**FIELDS['batches'], 'seed': 1}}
  checkpoint.bind_fields(tmp_path, other)
  save_and_wait(tmp_path, state_at(1))
  checkpoint.bind_fields(tmp_path, other)
  with pytest.raises(ValueError, match=r'batches\.seed: 1 -> 0'):
    checkpoint.bind_fields(tmp_path, FIELDS)


def test_checkpoints_without_fields_are_refused(tmp_path):
  save_and_wait(tmp_path, state_at(1))
  with pytest.raises(ValueError, match='holds checkpoints but no run_fields.json'):
    checkpoint.bind_fields(tmp_path, FIELDS)


def test_gs_checkpoints_go_to_tensorstores_gcs_driver(tmp_path, monkeypatch):
  """What orbax would open for a gs:// workdir, checked without GCS (never reached from here).

  The checkpoint folder keeps its scheme (a local one is made absolute), and the tensorstore spec
  orbax builds for a checkpoint's arrays there is the gcs driver on that bucket and path, a driver
  of this tensorstore build (tensorstore writes no tf.io.gfile file system, hence test_train's
  ram:// run keeping checkpoints local).
  """
  monkeypatch.chdir(tmp_path)
  folder = checkpoint.checkpoint_dir('gs://bucket/runs/x')
  assert os.fspath(folder) == 'gs://bucket/runs/x/checkpoints'
  assert os.fspath(checkpoint.checkpoint_dir('runs/x')) == str(tmp_path / 'runs/x/checkpoints')
  info = ocp.type_handlers.ParamInfo(  # what orbax's ArrayHandler writes params.w of step 4 with
      name='params.w', parent_dir=folder / '4' / 'default', is_ocdbt_checkpoint=True,
      ts_context=ocp.serialization.tensorstore_utils.get_ts_context())
  spec = ocp.type_handlers.get_json_tspec_write(info, use_ocdbt=True, global_shape=(3, 2),
                                                local_shape=(3, 2), dtype=np.dtype('float32'),
                                                process_index=0)
  kvstore = ts.KvStore.Spec(spec['kvstore']).to_json()  # a driver unknown to tensorstore raises
  assert kvstore['driver'] == 'ocdbt'
  assert kvstore['base'] == {'driver': 'gcs', 'bucket': 'bucket',
                             'path': 'runs/x/checkpoints/4/default/ocdbt.process_0/'}
