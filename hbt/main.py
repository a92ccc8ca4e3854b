"""hbt entry point: python -m hbt.main --config=configs/xquad.py --workdir=DIR [--config.x=y].

config.mode selects the job: 'all' (prepare shards if needed, evaluate zero-shot, train, evaluate
the trained model), 'prepare', 'train', 'eval' or 'dry_run' (hbt/train/dry_run.py).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import tensorflow as tf  # noqa: E402

from hbt import config_lib  # noqa: E402
from hbt import io  # noqa: E402
from hbt.train import dry_run  # noqa: E402
from hbt.train import loop  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for shards, checkpoints and reports.')
_COORDINATOR = flags.DEFINE_string('coordinator', None,
                                   'host:port of process 0 for multi-host runs (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process in a multi-host run.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout', 100, 'Seconds without a heartbeat from a process after which every '
    'process of a multi-host run stops (a process died; restart all of them to resume).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # orbax logs every file at INFO; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  tf.config.experimental.set_visible_devices([], 'GPU')  # tf.data only; accelerators are JAX's.
  config = _CONFIG.value
  config_lib.validate(config)
  if config.mode == 'dry_run':  # first: it sets the simulated device count before JAX starts
    dry_run.run(config)
    return
  if _COORDINATOR.value or os.environ.get('HBT_MULTIHOST'):
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)
  config_lib.check_batch_split(config, jax.device_count())
  # Compiled programs persist across runs (one per batch shape), so a rerun starts fast.
  jax.config.update('jax_compilation_cache_dir', str(io.cache_dir() / 'jax'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 2.0)
  logging.info('process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  loop.run(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
