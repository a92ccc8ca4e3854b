"""Device mesh and shardings, declared by the config: mesh axes and logical axis rules.

Params carry logical axis names (see model/encoder.py); `config.mesh.rules` maps them to mesh axes.
Batches are split over the 'data' axis: in global-view jit the whole global batch is one array, so
the compiler inserts the collectives and every device's pairs see all the others as negatives.
"""

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(mesh_config) -> Mesh:
  """A mesh over all devices (all processes) with the configured axes; one -1 takes the rest."""
  devices = jax.devices()
  shape = list(mesh_config.shape)
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f'config.mesh.shape={tuple(mesh_config.shape)} does not cover the '
                     f'{len(devices)} devices')
  return Mesh(np.asarray(devices).reshape(shape), tuple(mesh_config.axes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', the rest replicated."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated."""
  return NamedSharding(mesh, P())


def param_shardings(mesh: Mesh, boxed_abstract_params, rules) -> dict:
  """NamedShardings of params from their logical axis names (nn.Partitioned boxes) and the rules."""
  specs = nn.get_partition_spec(boxed_abstract_params)
  return nn.logical_to_mesh_sharding(specs, mesh, tuple(tuple(r) for r in rules))


def data_parallel_size(mesh: Mesh) -> int:
  """Number of shards of the batch."""
  return mesh.shape['data']
