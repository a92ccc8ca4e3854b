"""bench/bench_mfu.py's FLOP count and MFU, checked on the CPU on a tiny shape."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'bench'))
import bench_mfu  # noqa: E402  pylint: disable=g-import-not-at-top

from hbt.model import encoder  # noqa: E402


@pytest.mark.parametrize('hidden,mlp,length', [(64, 256, 32), (128, 512, 16)])
def test_analytic_flops_match_xla_cost_analysis(hidden, mlp, length):
  arch = dataclasses.replace(bench_mfu.arch_of('tiny'), hidden=hidden, mlp=mlp)
  module = encoder.Encoder(arch)
  ids = jnp.ones((8, length), jnp.int32)
  params = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), ids, ids))['params'])
  compiled = jax.jit(lambda p, i, m: module.apply({'params': p}, i, m)).lower(
      params, ids, ids).compile()
  analytic = bench_mfu.encoder_flops(arch, 8, length)
  # By hand: 2 layers x 8 x length tokens x (8 H^2 + 4 H M + 4 L H).
  assert analytic == 2 * 8 * length * (8 * hidden**2 + 4 * hidden * mlp + 4 * length * hidden)
  xla = bench_mfu._xla_flops(compiled)  # pylint: disable=protected-access
  assert analytic <= xla <= 1.3 * analytic  # XLA also counts softmax, LayerNorm, GELU


def test_mfu_and_peak():
  assert bench_mfu.train_flops(bench_mfu.arch_of('tiny'), 4, 8, 16) == 3 * (
      bench_mfu.encoder_flops(bench_mfu.arch_of('tiny'), 4, 8) +
      bench_mfu.encoder_flops(bench_mfu.arch_of('tiny'), 4, 16))
  assert bench_mfu.mfu(4.5e14, 1.0, 1e15) == pytest.approx(0.45)
  assert bench_mfu.peak_flops('NVIDIA H200', None) == 989e12
  assert bench_mfu.peak_flops('cpu', None) is None
  assert bench_mfu.peak_flops('cpu', 2.0) == 2e12


def test_run_on_cpu_tiny_shape():
  r = bench_mfu.run('tiny', batch=8, query_length=8, passage_length=16, steps=1,
                    dtype='float32')
  assert r['train_s'] > 0 and r['encode_s'] > 0
  assert r['train_flops'] == bench_mfu.train_flops(bench_mfu.arch_of('tiny'), 8, 8, 16)
  assert r['train_devices'] == jax.device_count()  # conftest: 8 simulated devices
  assert r['train_flops'] <= r['train_xla_flops'] <= 2 * r['train_flops']  # + elementwise, Adam
  assert 0 < bench_mfu.mfu(r['encode_flops'], r['encode_s'], 1e15) < 1


def test_engines_in_separate_processes_compare_through_results(tmp_path, monkeypatch, capsys):
  """hbt_fused and the PyTorch peer run (tiny shape, CPU); each call appends its figures to
  --results, and a later call's ratio lines compare with the earlier call's engine."""
  results = tmp_path / 'mfu.jsonl'
  common = ['bench_mfu.py', '--platform', 'cpu', '--model', 'tiny', '--peak-tflops', '1',
            '--batch', '8', '--query-length', '8', '--passage-length', '16', '--steps', '1',
            '--results', str(results)]
  monkeypatch.setattr(sys, 'argv', common + ['--engines', 'hbt_fused'])
  assert bench_mfu.main() == 0
  assert 'speed' not in capsys.readouterr().out  # nothing to compare with yet
  monkeypatch.setattr(sys, 'argv', common + ['--engines', 'torch_eager'])
  assert bench_mfu.main() == 0
  out = capsys.readouterr().out
  assert 'tiny       torch_eager   train ' in out
  fused = json.loads(results.read_text().splitlines()[0])
  assert fused['engine'] == 'hbt_fused' and fused['min_cosine'] > 0.999  # bf16, checked on CPU
  for what in ('train', 'encode'):
    assert f'{what:<7}hbt (hbt_fused) / PyTorch (torch_eager) speed: ' in out
  lines = results.read_text().splitlines()
  assert len(lines) == 2 and all(json.loads(l)['train_s'] > 0 for l in lines)


def test_gpu_script_runs_each_engine_in_its_own_process(tmp_path):
  """bench/gpu.sh on an offline image whose python already has CUDA jax: installs WHEELS into a
  target folder, then runs bench_mfu.py once per model and engine, on CUDA, sharing --results."""
  log = tmp_path / 'calls'
  stub = tmp_path / 'python'
  stub.write_text(f'#!/bin/bash\necho "$@" >> {log}\nexit 0\n')  # 'jax is on a GPU', every call
  stub.chmod(0o755)
  wheels = tmp_path / 'wheels'
  wheels.mkdir()
  (wheels / 'x-1-py3-none-any.whl').write_text('')
  root = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run(['bash', str(root / 'bench' / 'gpu.sh')], capture_output=True, text=True,
                        env={**os.environ, 'PYTHON': str(stub), 'WHEELS': str(wheels),
                             'MODELS': 'xlmr-large,e5-small', 'ENGINES': 'hbt,torch_eager',
                             'OUT': str(tmp_path)}, check=False, timeout=60)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  calls = log.read_text().splitlines()
  assert any('install' in c and '--target /tmp/hbt-wheels' in c for c in calls)
  runs = [c.split() for c in calls if c.startswith('bench/bench_mfu.py')]
  assert [(r[r.index('--model') + 1], r[r.index('--engines') + 1]) for r in runs] == [
      ('xlmr-large', 'hbt'), ('xlmr-large', 'torch_eager'), ('e5-small', 'hbt'),
      ('e5-small', 'torch_eager')]
  assert all(r[r.index('--platform') + 1] == 'cuda' for r in runs)
  assert len({r[r.index('--results') + 1] for r in runs}) == 1
  assert "using " in (tmp_path / 'gpu_bench.txt').read_text()


def test_bench_mfu_imports_neither_tensorflow_nor_the_data_pipeline():
  """GPU images run bench_mfu.py without TensorFlow: it and the shared bench/common.py (the
  PyTorch peer's home) must import without it."""
  bench = pathlib.Path(__file__).resolve().parents[1] / 'bench'
  code = ('import sys; import bench_mfu, common; '
          'assert bench_mfu.common is common; '
          'bad = [m for m in sys.modules if m.split(".")[0] == "tensorflow" '
          'or m.startswith(("hbt.data", "hbt.batches", "hbt.experiments"))]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], cwd=bench, check=True,
                 env={**os.environ, 'PYTHONPATH': str(bench.parent)})
