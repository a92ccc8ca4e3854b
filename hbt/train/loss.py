"""InfoNCE over the global batch: every other pair's positive (and any hard negative) is a negative,
except the in-batch false negatives: the texts of the pair's own positive group (see `info_nce`).

Written once, over the whole global batch: under global-view jit the compiler adds whatever
collectives the mesh needs, so there is no per-device loss and no scaling by world size.
"""

import jax
import jax.numpy as jnp


def false_negatives(groups: jax.Array, candidate_groups: jax.Array) -> jax.Array:
  """[B, C] bool: candidate c is not a negative of query i (c != i has i's positive group).

  Args:
    groups: [B] the positive group of each pair (`PairSet.groups`).
    candidate_groups: [C] the group of each candidate, the B positives first; -1 for a text that
      is nobody's positive (never masked).
  """
  same = groups[:, None] == candidate_groups[None, :]
  own = jnp.arange(candidate_groups.shape[0])[None, :] == jnp.arange(groups.shape[0])[:, None]
  return same & ~own


def info_nce(queries: jax.Array, positives: jax.Array, *, temperature: float,
             negatives: jax.Array | None = None, symmetric: bool = False,
             groups: jax.Array | None = None,
             negative_groups: jax.Array | None = None) -> jax.Array:
  """Mean InfoNCE loss of L2-normalised embeddings (cosine scores divided by temperature).

  Candidates in the query's own positive group (another id's positive that is the same text or its
  translation, or a hard negative equal to such a text) are in-batch false negatives: with
  `groups`, they are left out of the softmax.

  Args:
    queries: [B, D] query embeddings.
    positives: [B, D] positive embeddings; positives[i] is the positive of queries[i].
    temperature: the softmax temperature (1.0 gives plain cosine logits).
    negatives: optional [B, K, D] hard negatives, shared by all queries like the positives.
    symmetric: also average the positive -> query direction (over the B queries).
    groups: optional [B] int positive group of each pair; None masks nothing.
    negative_groups: optional [B, K] int group of each hard negative (-1: none).

  Returns:
    The scalar loss.
  """
  batch = queries.shape[0]
  candidates = positives if negatives is None else jnp.concatenate(
      [positives, negatives.reshape(-1, negatives.shape[-1])])
  logits = jnp.dot(queries, candidates.T, preferred_element_type=jnp.float32) / temperature
  if groups is not None:
    candidate_groups = groups if negatives is None else jnp.concatenate(
        [groups, negative_groups.reshape(-1)])
    logits = jnp.where(false_negatives(groups, candidate_groups), -jnp.inf, logits)
  labels = jnp.arange(batch)
  loss = _cross_entropy(logits, labels)
  if symmetric:
    back = jnp.dot(positives, queries.T, preferred_element_type=jnp.float32) / temperature
    if groups is not None:
      back = jnp.where(false_negatives(groups, groups), -jnp.inf, back)
    loss = 0.5 * (loss + _cross_entropy(back, labels))
  return loss


def parallel_info_nce(anchors: jax.Array, parallels: jax.Array, rows: jax.Array, *,
                      temperature: float, groups: jax.Array | None = None) -> jax.Array:
  """InfoNCE between parallel translations: anchors[i] (a query or passage in one language) should
  score parallels[i] (the same text of its id in another language) above every other parallels[j].

  Used for query-to-query and passage-to-passage alignment (config.train.parallel_query_weight,
  parallel_passage_weight). Only the rows where the two languages differ take part (a same-language
  row would align a text with itself); their mean, 0 when there are none. All B parallels stay
  candidates. With `groups`, parallels of the anchor's own group (the same passage or its
  translation) are in-batch false negatives and left out, as in `info_nce`.

  Args:
    anchors: [B, D] L2-normalised embeddings.
    parallels: [B, D] L2-normalised embeddings of their translations.
    rows: bool [B], the rows whose two languages differ.
    temperature: the softmax temperature.
    groups: optional [B] int positive group of each row.
  """
  logits = jnp.dot(anchors, parallels.T, preferred_element_type=jnp.float32) / temperature
  if groups is not None:
    logits = jnp.where(false_negatives(groups, groups), -jnp.inf, logits)
  picked = jnp.diagonal(logits)
  per_row = jax.nn.logsumexp(logits, axis=1) - picked
  count = jnp.sum(rows)
  return jnp.sum(jnp.where(rows, per_row, 0.0)) / jnp.maximum(count, 1)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def in_batch_accuracy(queries: jax.Array, positives: jax.Array,
                      groups: jax.Array | None = None) -> jax.Array:
  """Fraction of queries whose own positive scores highest among the batch's positives (those of
  the query's own group left out, as in `info_nce`)."""
  scores = jnp.dot(queries, positives.T, preferred_element_type=jnp.float32)
  if groups is not None:
    scores = jnp.where(false_negatives(groups, groups), -jnp.inf, scores)
  return jnp.mean(jnp.argmax(scores, axis=1) == jnp.arange(queries.shape[0]))
