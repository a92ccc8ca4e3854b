"""bench/bench_mfu.py's FLOP count and MFU, checked on the CPU on a tiny shape."""

import dataclasses
import pathlib
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
