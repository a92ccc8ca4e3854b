"""config.model.dtype='auto': bf16 where matmuls have fast bf16 hardware, f32 elsewhere."""

import pytest

from hbt import config_lib
from hbt.model import dtype as dtype_lib
from configs import default

SPR = {'avx512f', 'amx_tile', 'amx_bf16', 'amx_int8', 'avx512_bf16'}  # Sapphire Rapids
EPYC = {'avx512f', 'avx512_bf16', 'avx512_vnni'}  # AMD Zen 4: AVX512-BF16, no AMX
ICELAKE = {'avx512f', 'avx512_vnni', 'avx512vl'}  # neither


@pytest.mark.parametrize('platform,flags,expected', [
    ('cpu', SPR, 'bfloat16'),
    ('cpu', EPYC, 'bfloat16'),
    ('cpu', ICELAKE, 'float32'),
    ('cpu', set(), 'float32'),
    ('gpu', set(), 'bfloat16'),
    ('tpu', ICELAKE, 'bfloat16'),
])
def test_auto_decision(platform, flags, expected):
  assert dtype_lib.resolve('auto', platform, frozenset(flags)) == expected


@pytest.mark.parametrize('name', ['float32', 'bfloat16'])
def test_explicit_dtype_is_kept(name):
  assert dtype_lib.resolve(name, 'gpu', frozenset()) == name
  assert dtype_lib.resolve(name, 'cpu', frozenset(SPR)) == name


def test_cpu_flags_read_from_cpuinfo(tmp_path):
  path = tmp_path / 'cpuinfo'
  path.write_text('processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f avx512_bf16\n\n'
                  'processor\t: 1\nflags\t\t: fpu\n')
  assert dtype_lib.cpu_flags(str(path)) == {'fpu', 'avx512f', 'avx512_bf16'}
  assert dtype_lib.resolve('auto', 'cpu', dtype_lib.cpu_flags(str(path))) == 'bfloat16'
  assert dtype_lib.cpu_flags(str(tmp_path / 'missing')) == frozenset()


def test_auto_is_the_default_and_is_logged(caplog):
  config = default.get_config()
  assert config.model.dtype == 'auto'
  config_lib.validate(config)
  with caplog.at_level('INFO'):
    dtype_lib.resolve('auto', 'cpu', frozenset(ICELAKE))
  assert "'auto' -> float32" in caplog.text


def test_bad_dtype_fails():
  with pytest.raises(ValueError, match='config.model.dtype'):
    dtype_lib.resolve('float16', 'cpu', frozenset())


def _equations(jaxpr):
  """Every equation of `jaxpr`, those of its sub-jaxprs (jit, scan, custom_vjp) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          yield from _equations(sub)


@pytest.mark.parametrize('name', ['float32', 'bfloat16'])
def test_config_dtype_reaches_the_model_matmuls(name, tiny_checkpoint):
  """build.load gives the encoder config.model.dtype, and its dense matmuls take that dtype."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hbt.model import build  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.source, config.model.checkpoint = 'hf', str(tiny_checkpoint)
  config.model.dtype = name
  model = build.load(config.model)
  assert model.module.dtype == jnp.dtype(name)
  ids = np.full((2, 6), 5, np.int32)
  jaxpr = jax.make_jaxpr(model.module.apply)({'params': model.params}, ids, np.ones_like(ids))
  dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == 'dot_general']
  assert len(dots) >= 6  # q, k, v, out, mlp_in, mlp_out (scanned layers: once each)
  assert {v.aval.dtype for e in dots for v in e.invars} == {jnp.dtype(name)}
