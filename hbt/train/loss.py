"""InfoNCE over the global batch: every other pair's positive (and any hard negative) is a negative.

Written once, over the whole global batch: under global-view jit the compiler adds whatever
collectives the mesh needs, so there is no per-device loss and no scaling by world size.
"""

import jax
import jax.numpy as jnp


def info_nce(queries: jax.Array, positives: jax.Array, *, temperature: float,
             negatives: jax.Array | None = None, symmetric: bool = False) -> jax.Array:
  """Mean InfoNCE loss of L2-normalised embeddings (cosine scores divided by temperature).

  Args:
    queries: [B, D] query embeddings.
    positives: [B, D] positive embeddings; positives[i] is the positive of queries[i].
    temperature: the softmax temperature (1.0 gives plain cosine logits).
    negatives: optional [B, K, D] hard negatives, shared by all queries like the positives.
    symmetric: also average the positive -> query direction (over the B queries).

  Returns:
    The scalar loss.
  """
  batch = queries.shape[0]
  candidates = positives if negatives is None else jnp.concatenate(
      [positives, negatives.reshape(-1, negatives.shape[-1])])
  logits = jnp.dot(queries, candidates.T, preferred_element_type=jnp.float32) / temperature
  labels = jnp.arange(batch)
  loss = _cross_entropy(logits, labels)
  if symmetric:
    back = jnp.dot(positives, queries.T, preferred_element_type=jnp.float32) / temperature
    loss = 0.5 * (loss + _cross_entropy(back, labels))
  return loss


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def in_batch_accuracy(queries: jax.Array, positives: jax.Array) -> jax.Array:
  """Fraction of queries whose own positive scores highest among the batch's positives."""
  scores = jnp.dot(queries, positives.T, preferred_element_type=jnp.float32)
  return jnp.mean(jnp.argmax(scores, axis=1) == jnp.arange(queries.shape[0]))
