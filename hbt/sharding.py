"""Device mesh and shardings, declared by the config: mesh axes and logical axis rules.

Params carry logical axis names (see model/encoder.py) and so do the hidden states ('batch',
'length', 'act_embed', 'heads', 'mlp'); `config.mesh.rules` maps each name to mesh axes. The
default mesh is (data, fsdp, tensor):
  - the global batch is split over data x fsdp (every device holds different pairs; in global-view
    jit the whole batch is one array, so every pair still sees all the others as negatives);
  - 'embed' on 'fsdp' splits each param matrix (and its optimizer state) over the fsdp devices,
    which gather a layer's weights when they use it (ZeRO-3 / FSDP);
  - 'heads', 'mlp' and 'vocab' on 'tensor' split the attention heads, the MLP and the vocabulary
    (Megatron-style tensor parallelism); the residual stream ('act_embed') stays whole.
A param dimension that a mesh axis does not divide is left unsplit on that axis (XLM-R's vocabulary
of 250002 over 4 devices), so any checkpoint runs on any mesh.
"""

import functools
import math

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')  # Mesh axes the global batch is split over, when the mesh has them.


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A mesh over `devices` (default: all, of all processes) with the configured axes.

  One size of -1 takes the remaining devices. `jax.make_mesh` orders the devices so that the
  last axes ('tensor', then 'fsdp') sit on the most closely connected devices.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = list(mesh_config.shape)
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f'config.mesh.shape={tuple(mesh_config.shape)} does not cover the '
                     f'{len(devices)} devices')
  axes = tuple(mesh_config.axes)
  return jax.make_mesh(tuple(shape), axes, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(axes))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch is split over: 'data' and 'fsdp', those the mesh has."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated."""
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  """Number of shards of the batch (the global batch must be a multiple of it)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def mesh_rules(mesh: Mesh, rules) -> tuple:
  """The rules as flax wants them (tuples), keeping only mesh axes that `mesh` has."""
  def fit(target):
    if target is None or isinstance(target, str):
      return target if target in mesh.axis_names else None
    kept = tuple(a for a in target if a in mesh.axis_names)
    return kept or None
  return tuple((name, fit(target)) for name, target in rules)


def _divisible(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """`spec` with the mesh axes that do not divide their dimension dropped (left unsplit)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for a in axes:
      if dim % (math.prod(mesh.shape[k] for k in kept) * mesh.shape[a]) == 0:
        kept.append(a)
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return P(*out)


def param_shardings(mesh: Mesh, boxed_abstract_params, rules):
  """NamedShardings of params (or any tree of nn.Partitioned boxes: optimizer state, TrainState)
  from their logical axis names and the rules; unboxed leaves are replicated."""
  rules = mesh_rules(mesh, rules)
  specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_abstract_params), rules)
  shapes = nn.unbox(boxed_abstract_params)
  fit = lambda spec, x: _divisible(P() if spec is None else spec, x.shape, mesh)
  return jax.tree.map(lambda spec, x: NamedSharding(mesh, fit(spec, x)), specs, shapes,
                      is_leaf=lambda x: isinstance(x, P) or x is None)


def with_activation_rules(fn, mesh: Mesh, rules):
  """`fn` tracing under `rules`, so the encoder's nn.with_logical_constraint calls shard its hidden
  states over `mesh` (jit the result). Without rules (or outside) those calls are no-ops."""
  if not rules:
    return fn

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), \
         nn.logical_axis_rules(mesh_rules(mesh, rules)):
      return fn(*args, **kwargs)
  return wrapped


def global_array(host: np.ndarray, array_sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds whole; each puts its own shards.

  Unlike jax.device_put of a numpy array, this works under jax.distributed with P processes: every
  process hands in only the slices its local devices hold.
  """
  return jax.make_array_from_callback(host.shape, array_sharding, lambda index: host[index])


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process sharded) array as numpy, on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
