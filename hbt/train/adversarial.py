"""Domain-adversarial training (DANN) as a baseline: a language discriminator behind gradient
reversal.

A small classifier predicts the language of every pooled query and positive embedding of the batch.
Its input passes through `reverse_gradient`: the identity forward, -lambda * g backward. So one
optimizer step moves the discriminator to tell the languages apart and the encoder to make them
indistinguishable (Ganin & Lempitsky, 2015). Lambda follows a schedule over the run: 'dann',
lambda_max * (2 / (1 + exp(-10 p)) - 1) with p = step / steps, or 'constant', lambda_max.

Classes are the project's language vocabulary (`LANGS`, the sorted `pairs.KNOWN_LANGS`), so the
discriminator's shape depends on no data; classes that never occur only learn low logits.
The discriminator's params live in the TrainState's trainable params under `NAME` (same optimizer;
its kernels decayed, its biases not); `step.merge_params` leaves them out of the encoder.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from hbt.data import pairs as pairs_lib

NAME = 'discriminator'  # its key in TrainState.params
LANGS = tuple(sorted(pairs_lib.KNOWN_LANGS))  # class c is language LANGS[c]
SCHEDULES = ('dann', 'constant')


@jax.custom_vjp
def reverse_gradient(x: jax.Array, lam: jax.Array) -> jax.Array:
  """The identity; its gradient is -lam times the incoming one (none flows to lam)."""
  del lam
  return x


def _reverse_fwd(x, lam):
  return x, lam


def _reverse_bwd(lam, g):
  return -lam * g, jnp.zeros_like(lam)


reverse_gradient.defvjp(_reverse_fwd, _reverse_bwd)


def lambda_at(step: jax.Array, steps: int, schedule: str, lambda_max: float) -> jax.Array:
  """The reversal strength at `step` of `steps`: 'dann' or 'constant' (module docstring)."""
  if schedule == 'constant':
    return jnp.asarray(lambda_max, jnp.float32)
  p = jnp.asarray(step, jnp.float32) / max(steps, 1)
  return lambda_max * (2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0)


class Discriminator(nn.Module):
  """Language logits [N, len(LANGS)] of embeddings [N, D]: linear, or an MLP of `hidden` units."""

  hidden: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    if self.hidden:
      x = nn.gelu(nn.Dense(self.hidden, name='hidden')(x))
    return nn.Dense(len(LANGS), name='logits')(x)


def init_params(adversarial_config, dim: int, seed: int) -> dict:
  """The discriminator's initial params for embeddings of size `dim`."""
  module = Discriminator(adversarial_config.hidden)
  return module.init(jax.random.fold_in(jax.random.key(seed), 7), jnp.zeros((1, dim)))['params']


def loss_and_accuracy(params: dict, embeddings: jax.Array, langs: jax.Array, lam: jax.Array, *,
                      hidden: int) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of the discriminator on reversed embeddings [N, D] with language classes
  langs [N], and its accuracy."""
  logits = Discriminator(hidden).apply({'params': params}, reverse_gradient(embeddings, lam))
  picked = jnp.take_along_axis(logits, langs[:, None], axis=1)[:, 0]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)
  return loss, jnp.mean(jnp.argmax(logits, axis=1) == langs)
