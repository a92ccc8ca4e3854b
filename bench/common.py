"""What the benches share: the machine header, compile counting, peak RSS, the PyTorch peer model,
and running one engine in a child process (so each engine's peak RSS is its own).

Importing it loads neither TensorFlow nor the data pipeline (`bench_mfu.py` runs on GPU images
without them): hbt's own modules are imported where they are used."""

import json
import os
import resource
import subprocess
import sys

import numpy as np

RESULT = 'RESULT '  # prefix of the JSON line a child process prints last


def load() -> float:
  """The 1-minute load average."""
  return os.getloadavg()[0]


def cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine_header() -> str:
  """One line: CPU model, its bf16 matmul flags, cores, load, what dtype 'auto' picks, versions."""
  import jax  # pylint: disable=g-import-not-at-top
  from hbt.experiments import summary as summary_lib  # pylint: disable=g-import-not-at-top
  from hbt.model import dtype as dtype_lib  # pylint: disable=g-import-not-at-top
  m = summary_lib.machine()
  bf16 = ', '.join(f'{f} {"yes" if f in m["bf16_flags"] else "no"}'
                   for f in dtype_lib.FAST_BF16_CPU_FLAGS)
  return (f'CPU {m["cpu"]} ({bf16}); {cores()} cores; load average {load():.2f}; '
          f"jax {jax.__version__} on {jax.default_backend()}, dtype 'auto' -> "
          f'{dtype_lib.resolve("auto")}')


def peak_rss_mib() -> float:
  """This process's peak resident set size (ru_maxrss, KiB on Linux) in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CompileCounter:
  """Counts XLA backend compilations (jax.monitoring events) and their seconds."""

  EVENT = '/jax/core/compile/backend_compile_duration'

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
    self.count, self.seconds = 0, 0.0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **_):
    if event == self.EVENT:
      self.count += 1
      self.seconds += duration

  def reset(self) -> tuple[int, float]:
    """(count, seconds) since the last reset; starts counting afresh."""
    out = (self.count, self.seconds)
    self.count, self.seconds = 0, 0.0
    return out


def torch_peer(arch, state: dict | None, dropout: float = 0.0):
  """transformers' XLMRobertaModel with hbt's Arch and the given float32 HF state dict (random
  weights where `state` is None)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.XLMRobertaConfig(
      vocab_size=arch.vocab_size, hidden_size=arch.hidden, num_hidden_layers=arch.layers,
      num_attention_heads=arch.heads, intermediate_size=arch.mlp,
      max_position_embeddings=arch.max_positions, type_vocab_size=arch.type_vocab_size,
      layer_norm_eps=arch.layer_norm_eps, pad_token_id=arch.pad_id, hidden_act='gelu',
      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
  model = transformers.XLMRobertaModel(config, add_pooling_layer=False)
  if state is None:
    return model
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()},
      strict=False)
  missing = [k for k in missing if not k.endswith(('position_ids', 'token_type_ids'))]
  if missing or unexpected:
    raise ValueError(f'torch peer: missing {missing}, unexpected {unexpected}')
  return model


def run_child(script: str, args: list[str], timeout: float | None = None,
              env: dict | None = None) -> dict:
  """Runs `python script args` (in `env`, else this process's environment) and returns the JSON of
  its last RESULT line, or {'error': the exit status and the output's tail}."""
  proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                        timeout=timeout, check=False, env=env)
  lines = proc.stdout.splitlines()
  results = [line[len(RESULT):] for line in lines if line.startswith(RESULT)]
  if proc.returncode or not results:
    tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-15:])
    return {'error': f'exit {proc.returncode}: {tail}'}
  return json.loads(results[-1])


def report(result: dict) -> None:
  """Prints a child's RESULT line (with its peak RSS) for the parent to read."""
  print(RESULT + json.dumps({**result, 'rss_mib': peak_rss_mib()}), flush=True)
