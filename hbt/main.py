"""hbt entry point: python -m hbt.main --config=configs/xquad.py --workdir=DIR [--config.x=y].

config.mode selects the job: 'all' (prepare shards if needed, train with the evaluators of
config.evals, log the first and last step's tables), 'prepare', 'train', 'eval' or 'dry_run'
(hbt/train/dry_run.py). A config file
takes a variant after a colon: --config=configs/default.py:eval=mlqa_r.

Console: absl logging (INFO from hbt and clu's metric writer and progress; only warnings from the
libraries, unless --verbosity is given). A bad input or config stops the run with one line on
stderr and exit status 2 (a diverged loss: status 3); --verbosity=1 shows the traceback.
"""

import logging as std_logging
import os
import re
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TF only parses shards and writes summaries here (no op with a oneDNN kernel); with oneDNN on, TF
# logs an INFO line at import that TF_CPP_MIN_LOG_LEVEL does not silence.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import clu  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import tensorflow as tf  # noqa: E402

import hbt  # noqa: E402
from hbt import config_lib  # noqa: E402
from hbt import io  # noqa: E402
from hbt.train import dry_run  # noqa: E402
from hbt.train import loop  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for shards, checkpoints and reports (local or gs://).')
_COORDINATOR = flags.DEFINE_string('coordinator', None,
                                   'host:port of process 0 for multi-host runs (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process in a multi-host run.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout', 100, 'Seconds without a heartbeat from a process after which every '
    'process of a multi-host run stops (a process died; restart all of them to resume).')
flags.mark_flags_as_required(['config', 'workdir'])

EXIT_BAD_INPUT = 2  # a bad config, flag or input file
EXIT_DIVERGED = 3  # a non-finite loss stopped training
# What a user's input or config raises: stopped with its message on one line.
BAD_INPUT_ERRORS = (ValueError, OSError, KeyError)
_OWN_LOGS = tuple(os.path.dirname(m.__file__) + os.sep for m in (hbt, clu))


def _own_or_warning(record: std_logging.LogRecord) -> bool:
  """Keeps hbt's and clu's records (metrics, progress) and every library's warnings.

  A record's level is Python's (WARNING = 30); absl's `logging.WARNING` is a verbosity (-1).
  """
  return record.levelno >= std_logging.WARNING or record.pathname.startswith(_OWN_LOGS)


def _stop(message, status: int):
  """Writes `message` as one line on stderr and exits with `status`.

  A traceback inside the message (config_flags quotes the config file's) is cut to its last line.
  """
  message = str(message)
  head, sep, trace = message.partition('Traceback (most recent call last):')
  if sep:
    message = head + trace.strip().splitlines()[-1]
  sys.stderr.write(f'hbt: error: {" ".join(message.split())}\n')
  sys.stderr.flush()
  sys.exit(status)


def parse_flags(argv):
  """absl flag parsing; a bad flag or config file (or a config variant) is one line, status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _stop(e, EXIT_BAD_INPUT)
  except (AttributeError, KeyError) as e:  # config_flags: an override of a field that is not there
    _stop(_unknown_field(argv, e), EXIT_BAD_INPUT)


def _unknown_field(argv, error: Exception) -> str:
  """The message of an override config_flags could not find: the --config.* flags naming it.

  config_flags raises AttributeError(KeyError("'field'\\nDid you mean ...?")) or KeyError(...).
  """
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  first, *hint = str(error.args[0] if error.args else error).splitlines()
  overrides = [a.partition('=')[0] for a in argv[1:] if a.startswith('--config.')]
  field = re.fullmatch(r"'([^']+)'", first)  # one level of the path: the flags through it
  path = re.search(r'Attempting to lookup: (\S+)', first)  # a field under a non-dict value
  if field:
    overrides = [f for f in overrides if field[1] in f.split('.')[1:]] or overrides
    first = f'no field {field[1]!r}'
  elif path:
    overrides = [f for f in overrides if f == f'--config.{path[1]}'] or overrides
  return (f'{", ".join(overrides) or "a --config.* flag"} names a field the config does not '
          f'have ({"; ".join([first, *hint])})')


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # orbax logs every file at INFO; --verbosity=0 shows it
    logging.get_absl_handler().addFilter(_own_or_warning)
  try:
    run()
  except BAD_INPUT_ERRORS + (FloatingPointError,) as e:
    if flags.FLAGS.verbosity >= 1:
      raise
    status = EXIT_DIVERGED if isinstance(e, FloatingPointError) else EXIT_BAD_INPUT
    _stop(f'{type(e).__name__}: {e} (--verbosity=1 shows the traceback)', status)


def run():
  tf.config.experimental.set_visible_devices([], 'GPU')  # tf.data only; accelerators are JAX's.
  config = _CONFIG.value
  config_lib.validate(config)
  if config.mode == 'dry_run':  # first: it sets the simulated device count before JAX starts
    dry_run.run(config)
    return
  if _COORDINATOR.value or os.environ.get('HBT_MULTIHOST'):
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)
    if jax.process_index() > 0:  # one console, process 0's: the others warn only, show no bars
      config.eval.progress = False
      if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
  config_lib.check_batch_split(config, jax.device_count())
  # Compiled programs persist across runs (one per batch shape), so a rerun starts fast.
  jax.config.update('jax_compilation_cache_dir', str(io.cache_dir() / 'jax'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 2.0)
  logging.info('process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  loop.run(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
