"""`--config.mode=dry_run`: the train step of a big model, compiled for N devices, with no weights.

  python -m hbt.main --config=configs/models.py:xlmr_xl --workdir=/tmp/dry \\
      --config.mode=dry_run --config.dry_run.devices=64 --config.mesh.shape='(1,-1,1)'

The params and optimizer state exist only as shapes (`jax.eval_shape`); the train step is lowered
and compiled ahead of time (`jit(...).lower(...).compile()`) for config.model.arch on
config.dry_run.devices simulated CPU devices laid out as config.mesh, with the real shardings, batch
(config.train: batch_size, max_*_length, hard_negatives, pack_texts, grad_accum_steps; the parallel
sides of the alignment terms when they are on), objective (the language discriminator's params
under config.train.adversarial) and remat. XLA's host
device count is fixed when JAX starts its backend, so hbt.main calls `run` first thing, before
anything touches a device; in a process whose backend has started (tests), `analyse` takes the
devices it has. Printed, per step and per device unless said otherwise:
  params           parameter count (all, and trainable);
  flops            XLA's cost analysis of the step (all devices), and / devices;
  params / opt     bytes of this device's shards of the params and of the optimizer state;
  temp             XLA's temporaries: activations kept for the backward pass, gradients, buffers;
  peak             arguments + outputs - donated aliases + temporaries.
A CPU compile sees the same shapes and shardings as a TPU or GPU one but schedules differently, so
the temp figure is an estimate of an accelerator's; the params and optimizer figures are exact.
"""

import dataclasses
import json
import math
import os
import pathlib
import re
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from hbt import sharding
from hbt.batches import buckets
from hbt.model import encoder
from hbt.model import weights
from hbt.train import loop
from hbt.train import step as step_lib


def use_simulated_devices(count: int) -> None:
  """Makes JAX start with `count` CPU devices; call before anything touches a device."""
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={count}'.strip()
  jax.config.update('jax_platforms', 'cpu')
  if jax.device_count() != count:
    raise RuntimeError(f'config.dry_run.devices={count}, but JAX had already started with '
                       f'{jax.device_count()} devices')


def arch_of(model_config) -> encoder.Arch:
  """config.model.arch, else the architecture in a local checkpoint folder's config.json."""
  if model_config.arch:
    return encoder.Arch(**model_config.arch)
  path = pathlib.Path(model_config.checkpoint) / 'config.json'
  return weights.hf_arch(json.loads(path.read_text(encoding='utf-8')))


def _abstract_batch(config, mesh) -> dict:
  """ShapeDtypeStructs of one global training batch as `evaluators.global_batch` hands it to the
  step (`input_pipeline`'s arrays), split like the real ones: the text sides' tokens and masks,
  their positive groups, the language ids, and the parallel sides under an alignment term."""
  t, spec = config.train, sharding.batch_sharding(mesh)
  p = t.pack_texts  # packed rows (hbt.batches.shards): B / p rows of windows of the max length,
  # at most p windows a row (p texts a row on average, each text filling a window at worst)
  shapes = ({'query': (t.batch_size, t.max_query_length),
             'positive': (t.batch_size, t.max_passage_length)} if p == 1 else
            {'query': (t.batch_size // p, p, t.max_query_length),
             'positive': (t.batch_size // p, p, t.max_passage_length)})
  if t.hard_negatives:
    shapes['negative'] = ((t.batch_size, t.hard_negatives, t.max_passage_length) if p == 1 else
                          (t.batch_size * t.hard_negatives // p, p, t.max_passage_length))
  if loop.parallel_sides(config):
    shapes.update(query2=shapes['query'], positive2=shapes['positive'])
  int32 = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=spec)
  batch = {f'{side}_{kind}': int32(shape) for side, shape in shapes.items()
           for kind in ('tokens', 'mask')}
  batch.update({f'{side}_group': int32((t.batch_size, t.hard_negatives) if side == 'negative'
                                       else (t.batch_size,)) for side in shapes})
  batch.update(query_lang=int32((t.batch_size,)), positive_lang=int32((t.batch_size,)))
  return batch


def _device_bytes(tree, shardings) -> int:
  """Bytes of one device's shards of `tree` (ShapeDtypeStructs) laid out as `shardings`."""
  sizes = jax.tree.map(lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize,
                       tree, shardings)
  return sum(jax.tree.leaves(sizes))


def analyse(config, arch: encoder.Arch, devices=None) -> dict:
  """Compiles the train step for `arch` on `devices` (default: all) without weights; its figures."""
  c = config
  mesh = sharding.make_mesh(c.mesh, devices)
  if c.train.batch_size % sharding.data_parallel_size(mesh):
    raise ValueError(f'config.train.batch_size={c.train.batch_size} must be a multiple of the '
                     f'{sharding.data_parallel_size(mesh)} batch shards (data x fsdp) of {mesh}')
  buckets.fit_pack(c.train, sharding.data_parallel_size(mesh))
  dtype = 'bfloat16' if c.model.dtype == 'auto' else c.model.dtype  # 'auto' is bf16 on accelerators
  pooling = 'mean' if c.model.pooling == 'auto' else c.model.pooling
  module = encoder.Encoder(arch, pooling=pooling, dtype=jnp.dtype(dtype),
                           dropout_rate=c.model.dropout_rate, remat=c.model.remat,
                           attention=c.model.attention)
  tx = step_lib.make_optimizer(c.train)
  freeze = c.train.freeze_embeddings
  heads = step_lib.heads(c.train, module, c.seed)  # the language discriminator's (small) params
  shardings = step_lib.state_shardings(module, tx, mesh, c.mesh.rules, freeze, heads)
  abstract = nn.unbox(step_lib.abstract_state(module, tx, freeze, heads))
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract, shardings)
  start = time.perf_counter()
  step = step_lib.jit_train_step(module, tx, shardings, mesh, c.train, c.seed, c.mesh.rules)
  # The program never runs: skip the backend's code optimisations (same buffers, same cost
  # analysis, about half the compile time on a CPU).
  batch = _abstract_batch(c, mesh)
  compiled = step.lower(state, batch).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  seconds = time.perf_counter() - start
  # XLA's cost analysis counts a loop's body once (the layer loop is rolled with remat): count
  # the FLOPs of the same step with the layer loop unrolled, lowered (global) but not compiled.
  unrolled = dataclasses.replace(module, scan_unroll=arch.layers)
  flops = step_lib.jit_train_step(unrolled, tx, shardings, mesh, c.train, c.seed,
                                  c.mesh.rules).lower(state, batch).cost_analysis()['flops']
  memory = compiled.memory_analysis()
  params = {**state.params, **state.frozen}
  return {
      'devices': mesh.size, 'mesh': dict(mesh.shape), 'dtype': dtype, 'remat': c.model.remat,
      'batch': (c.train.batch_size, c.train.max_query_length, c.train.max_passage_length),
      'params': sum(x.size for x in jax.tree.leaves(params)),
      'trainable_params': sum(x.size for x in jax.tree.leaves(state.params)),
      'flops': float(flops),
      'params_bytes': _device_bytes(params, {**shardings.params, **shardings.frozen}),
      'opt_state_bytes': _device_bytes(state.opt_state, shardings.opt_state),
      'argument_bytes': memory.argument_size_in_bytes,
      'output_bytes': memory.output_size_in_bytes,
      'alias_bytes': memory.alias_size_in_bytes,
      'temp_bytes': memory.temp_size_in_bytes,
      'compile_seconds': seconds,
  }


def summary(r: dict) -> str:
  """The figures of `analyse`, one per line."""
  gib = lambda b: f'{b / 2**30:.3f} GiB'
  peak = r['argument_bytes'] + r['output_bytes'] - r['alias_bytes'] + r['temp_bytes']
  return '\n'.join([
      f"dry run: {r['devices']} devices, mesh {r['mesh']}, {r['dtype']} matmuls, "
      f"remat {r['remat']}, batch x query x passage tokens {r['batch']}",
      f"params           {r['params'] / 1e6:,.1f} M ({r['trainable_params'] / 1e6:,.1f} M trained)",
      f"flops / step     {r['flops']:.3e} in all, {r['flops'] / r['devices']:.3e} per device",
      f"params / device  {gib(r['params_bytes'])}",
      f"opt / device     {gib(r['opt_state_bytes'])}",
      f"temp / device    {gib(r['temp_bytes'])} (activations, gradients, buffers)",
      f"peak / device    {gib(peak)} (arguments + outputs - donated + temp)",
      f"compiled in      {r['compile_seconds']:.0f} s",
  ])


def run(config) -> dict:
  """The dry run of config: simulated devices, compile, print the figures; returns them."""
  use_simulated_devices(config.dry_run.devices)
  result = analyse(config, arch_of(config.model))
  print(summary(result), flush=True)
  return result
