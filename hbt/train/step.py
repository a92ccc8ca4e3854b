"""TrainState, the optimizer, and the pure, jitted, sharded contrastive train step.

One step function serves every parallelism: the mesh (config.mesh) decides how the global batch
and the params are split, `jax.jit` with NamedShardings does the rest. The state is donated.

Large global batches: with `accum_steps` > 1 the step is GradCache-style, so the loss still sees the
whole global batch as negatives: (1) embed every micro-batch without keeping activations, (2) take
the loss and its gradient w.r.t. the embeddings over the global batch, (3) re-embed each micro-batch
and backpropagate its slice of that gradient, summing param gradients.

Dropout masks are per example: row r of a text group (queries, positives, or negatives flattened
pair-major) draws its masks from (group key, r), r being its row in the global batch (see
`encoder.Dropout`). So (1), (3) and the one-shot step see the same masks, and the gradient equals
the one-shot step's with dropout on too (tests/test_train_step.py).
"""

import functools
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hbt import sharding
from hbt.train import adversarial as adversarial_lib
from hbt.train import loss as loss_lib

FROZEN_WHEN_FREEZING = ('word_embeddings',)
# Top-level params that are embedding tables (decayed, as HF does).
EMBEDDINGS = ('word_embeddings', 'position_embeddings', 'token_type_embeddings')


@flax.struct.dataclass
class TrainState:
  """Everything a step changes or needs: step counter, trainable and frozen params, optimizer."""

  step: jax.Array
  params: Any  # trainable params
  frozen: Any  # params held fixed (the word embeddings when config.train.freeze_embeddings)
  opt_state: Any


def split_params(params: dict, freeze_embeddings: bool) -> tuple[dict, dict]:
  """(trainable, frozen) top-level subtrees of the encoder params."""
  frozen_names = FROZEN_WHEN_FREEZING if freeze_embeddings else ()
  return ({k: v for k, v in params.items() if k not in frozen_names},
          {k: v for k, v in params.items() if k in frozen_names})


def merge_params(state: TrainState, params=None) -> dict:
  """The full encoder params: trainable (or the given ones) plus frozen, without the heads that
  only training uses (the language discriminator)."""
  params = state.params if params is None else params
  return {**{k: v for k, v in params.items() if k != adversarial_lib.NAME}, **state.frozen}


def heads(train_config, module: nn.Module, seed: int) -> dict:
  """The trainable params beside the encoder's: the language discriminator under
  config.train.adversarial.weight > 0, else none."""
  a = train_config.adversarial
  if a.weight <= 0:
    return {}
  return {adversarial_lib.NAME: adversarial_lib.init_params(a, module.arch.hidden, seed)}


def learning_rate_schedule(train_config) -> optax.Schedule:
  """Linear warmup to the peak, then linear decay to 0 at the last step."""
  t = train_config
  warmup = optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1))
  decay = optax.linear_schedule(t.learning_rate, 0.0, max(t.steps - t.warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [t.warmup_steps])


def _decays(path) -> bool:
  """Whether the param at `path` (a key path of the encoder tree) gets weight decay."""
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]  # skips nn.Partitioned
  if names[-1] == 'kernel' or names[0] in EMBEDDINGS:
    return True
  if names[-1] in ('bias', 'scale'):
    return False
  raise ValueError(f'weight decay: no rule for param {"/".join(names)}; add one to '
                   'hbt/train/step.py:_decays')


def weight_decay_mask(params) -> Any:
  """True where AdamW decays: kernels and embedding tables; False for biases and LayerNorms.

  Chosen by path, not rank: the scanned layer stack gives every bias and LayerNorm scale a leading
  layer axis, so rank would decay them. This is the HF/BERT convention (no decay for any `bias`
  nor `LayerNorm.weight`; the embedding tables are decayed, as in HF's default optimizer).
  """
  return jax.tree_util.tree_map_with_path(lambda path, _: _decays(path), params)


def _discriminator_mask(params) -> Any:
  """True on the language discriminator's params (config.train.adversarial), False elsewhere."""
  return {k: jax.tree.map(lambda _, on=(k == adversarial_lib.NAME): on, v)
          for k, v in params.items()}


def make_optimizer(train_config) -> optax.GradientTransformation:
  """AdamW (decay as `weight_decay_mask`) after optional global-norm clipping; the language
  discriminator's updates (learning rate and decay) scaled by adversarial.lr_multiplier."""
  t = train_config
  parts = [optax.clip_by_global_norm(t.grad_clip_norm)] if t.grad_clip_norm > 0 else []
  parts.append(optax.adamw(learning_rate_schedule(t), b1=0.9, b2=0.999, eps=1e-6,
                           weight_decay=t.weight_decay, mask=weight_decay_mask))
  if t.adversarial.weight > 0 and t.adversarial.lr_multiplier != 1.0:
    parts.append(optax.masked(optax.scale(t.adversarial.lr_multiplier), _discriminator_mask))
  return optax.chain(*parts) if len(parts) > 1 else parts[0]


def _micro(x: jax.Array, accum_steps: int) -> jax.Array:
  """[B, ...] -> [A, B/A, ...], micro-batch i holding rows i, i+A, ... (spread over devices)."""
  return x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)


def _unmicro(x: jax.Array) -> jax.Array:
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


# Text groups a batch may hold, in the order their dropout keys are drawn: queries, positives,
# hard negatives, and the parallel sides of the alignment terms (query2: each id's query in the
# positive's language; positive2: its positive in the query's language).
SIDES = ('query', 'positive', 'negative', 'query2', 'positive2')


def _texts(batch: dict, sides=SIDES) -> list[tuple[str, str]]:
  """The (tokens, mask) keys of the batch's text groups among `sides`, in SIDES order."""
  return [(f'{s}_tokens', f'{s}_mask') for s in sides if f'{s}_tokens' in batch]


def _groups(batch: dict) -> dict:
  """The loss's positive-group arguments from the batch (absent: no false-negative masking)."""
  return {'groups': batch.get('positive_group'), 'negative_groups': batch.get('negative_group')}


def _objective(embs: dict, disc, batch: dict, step, *, temperature: float, symmetric: bool,
               parallel_query: float, parallel_passage: float, adversarial) -> tuple:
  """(the loss a step minimises, its terms' metrics) from the embeddings of every text group.

  InfoNCE, plus the configured terms: parallel_query * query-to-query and parallel_passage *
  passage-to-passage alignment (`loss.parallel_info_nce`, over the rows whose query and positive
  languages differ), and adversarial.weight * the language discriminator's loss on the queries and
  positives behind gradient reversal (`adversarial`).
  """
  loss = loss_lib.info_nce(embs['query'], embs['positive'], temperature=temperature,
                           negatives=embs.get('negative'), **_groups(batch), symmetric=symmetric)
  metrics = {}
  terms = [loss]
  if parallel_query > 0 or parallel_passage > 0:
    rows = batch['query_lang'] != batch['positive_lang']
    for name, weight, side, groups in (
        ('query_query', parallel_query, 'query', None),
        ('passage_passage', parallel_passage, 'positive', batch.get('positive_group'))):
      if weight > 0:
        term = loss_lib.parallel_info_nce(embs[side], embs[f'{side}2'], rows,
                                          temperature=temperature, groups=groups)
        metrics[f'{name}_loss'] = term
        terms.append(weight * term)
  if adversarial is not None and adversarial.weight > 0:
    lam = adversarial_lib.lambda_at(step, adversarial.steps, adversarial.schedule,
                                    adversarial.lambda_max)
    term, accuracy = adversarial_lib.loss_and_accuracy(
        disc, jnp.concatenate([embs['query'], embs['positive']]),
        jnp.concatenate([batch['query_lang'], batch['positive_lang']]), lam,
        hidden=adversarial.hidden)
    metrics.update(adversarial_loss=term, adversarial_accuracy=accuracy, adversarial_lambda=lam)
    terms.append(adversarial.weight * term)
  if len(terms) > 1:
    metrics['info_nce'] = loss
  return sum(terms), metrics


def embed_texts(module: nn.Module, params: dict, tokens: jax.Array, mask: jax.Array,
                num_pairs: int, pack_texts: int = 1, **kwargs) -> jax.Array:
  """The embeddings of one text group of a batch: [B, D], or [B, k, D] for hard negatives.

  Args:
    module: the encoder.
    params: its full params.
    tokens, mask: [B, L] or [B, k, L] (one text per row), or packed rows [R, w, W] of w windows
      holding R * pack_texts texts, no text crossing a window, the mask giving each token's text id
      (see `hbt.batches.shards`). The encoder sees the R * w windows as its rows, so attention
      costs w * W^2 per row, not (w * W)^2.
    num_pairs: B, the pairs of the batch.
    pack_texts: texts per packed row (on average); 1 if the rows are not packed.
    **kwargs: passed to `module.apply` (deterministic, rngs, rows: one id per encoder row).
  """
  flat = tokens.reshape(-1, tokens.shape[-1])
  if pack_texts == 1:
    out = module.apply({'params': params}, flat, mask.reshape(flat.shape), **kwargs)
    return out.reshape(*tokens.shape[:-1], out.shape[-1])
  out = module.apply({'params': params}, flat, mask.reshape(flat.shape),
                     num_texts=tokens.shape[0] * pack_texts, **kwargs)
  return out if out.shape[0] == num_pairs else out.reshape(num_pairs, -1, out.shape[-1])


def train_step(state: TrainState, batch: dict, *, module: nn.Module,
               tx: optax.GradientTransformation, seed: int, temperature: float,
               symmetric: bool, accum_steps: int = 1, parallel_query: float = 0.0,
               parallel_passage: float = 0.0, adversarial=None,
               pack_texts: int = 1) -> tuple[TrainState, dict]:
  """One optimizer step on a global batch; pure. Returns the new state and scalar metrics.

  `parallel_query`, `parallel_passage` and `adversarial` (a config.train.adversarial with 'steps'
  added, or None) add the terms of `_objective`. The alignment terms need the batch's 'query2' /
  'positive2' sides and 'query_lang' / 'positive_lang'; the adversarial term needs the latter and
  the discriminator's params in state.params (`heads`). `pack_texts` > 1: the batch's rows are
  packed (see `embed_texts`); needs accum_steps == 1.
  """
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  groups = _texts(batch)
  names = [t[:-len('_tokens')] for t, _ in groups]
  if pack_texts > 1 and accum_steps > 1:
    raise ValueError('packed rows (pack_texts > 1) need grad_accum_steps == 1')
  num_pairs = batch['query_tokens'].shape[0] * pack_texts

  def embed(params, tokens, mask, key, rows):
    """Embeddings of tokens [..., L] or packed rows; `rows` the global row of each row of tokens
    (its dropout)."""
    return embed_texts(module, merge_params(state, params), tokens, mask, num_pairs, pack_texts,
                       deterministic=False, rows=rows.reshape(-1), rngs={'dropout': key})

  def loss_of(embs, disc):
    return _objective(dict(zip(names, embs)), disc, batch, state.step, temperature=temperature,
                      symmetric=symmetric, parallel_query=parallel_query,
                      parallel_passage=parallel_passage, adversarial=adversarial)

  keys = [jax.random.fold_in(rng, g) for g in range(len(groups))]
  rows = [jnp.arange(batch[t][..., 0].size).reshape(batch[t].shape[:-1]) for t, _ in groups]
  if accum_steps == 1:
    def full_loss(params):
      embs = [embed(params, batch[t], batch[m], k, r)
              for (t, m), k, r in zip(groups, keys, rows)]
      loss, terms = loss_of(embs, params.get(adversarial_lib.NAME))
      return loss, (embs, terms)
    (loss, (embs, terms)), grads = jax.value_and_grad(full_loss, has_aux=True)(state.params)
  else:
    micro = [(_micro(batch[t], accum_steps), _micro(batch[m], accum_steps), _micro(r, accum_steps))
             for (t, m), r in zip(groups, rows)]

    def embed_all(params):  # (1) embeddings of every micro-batch, activations not kept
      return [_unmicro(jax.lax.map(lambda a, k=k: embed(params, a[0], a[1], k, a[2]), (t, m, r)))
              for (t, m, r), k in zip(micro, keys)]

    embs = embed_all(jax.lax.stop_gradient(state.params))
    disc = state.params.get(adversarial_lib.NAME)  # (2) loss over the global batch:
    (loss, terms), (emb_grads, disc_grads) = jax.value_and_grad(  # embedding, head gradients
        loss_of, argnums=(0, 1), has_aux=True)(embs, disc)
    emb_grads = [_micro(g, accum_steps) for g in emb_grads]

    def backprop(acc, i):  # (3) re-embed micro-batch i and push its embedding gradients back
      def surrogate(params):
        return sum(jnp.vdot(embed(params, t[i], m[i], k, r[i]), g[i])
                   for (t, m, r), k, g in zip(micro, keys, emb_grads))
      return jax.tree.map(jnp.add, acc, jax.grad(surrogate)(state.params)), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, _ = jax.lax.scan(backprop, zeros, jnp.arange(accum_steps))
    if disc is not None:
      grads = {**grads, adversarial_lib.NAME: disc_grads}

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, **terms,
             'accuracy': loss_lib.in_batch_accuracy(embs[0], embs[1], batch.get('positive_group')),
             'l2_grads': optax.tree.norm(grads), 'l2_updates': optax.tree.norm(updates),
             'l2_params': optax.tree.norm(params)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: dict, *, module: nn.Module, temperature: float,
              symmetric: bool, pack_texts: int = 1) -> dict:
  """Validation loss and in-batch accuracy (no dropout); pure."""
  num_pairs = batch['query_tokens'].shape[0] * pack_texts
  embs = [embed_texts(module, merge_params(state), batch[t], batch[m], num_pairs, pack_texts)
          for t, m in _texts(batch, ('query', 'positive', 'negative'))]
  negatives = embs[2] if len(embs) > 2 else None
  return {'loss': loss_lib.info_nce(embs[0], embs[1], temperature=temperature, **_groups(batch),
                                    negatives=negatives, symmetric=symmetric),
          'accuracy': loss_lib.in_batch_accuracy(embs[0], embs[1], batch.get('positive_group'))}


def abstract_state(module: nn.Module, tx, freeze_embeddings: bool,
                   extra: dict | None = None) -> TrainState:
  """The TrainState's shapes and dtypes (no memory), params boxed with their logical axis names;
  `extra`: trainable params beside the encoder's (`heads`; replicated)."""
  dummy = jnp.zeros((1, 2), jnp.int32)
  boxed = jax.eval_shape(module.init, jax.random.key(0), dummy, dummy)['params']
  boxed = {**boxed, **jax.eval_shape(lambda: extra or {})}
  trainable, frozen = split_params(boxed, freeze_embeddings)
  return jax.eval_shape(
      lambda: TrainState(step=jnp.zeros((), jnp.int32), params=trainable, frozen=frozen,
                         opt_state=tx.init(trainable)))


def state_shardings(module: nn.Module, tx, mesh, rules, freeze_embeddings: bool,
                    extra: dict | None = None) -> TrainState:
  """NamedShardings of the TrainState from the params' logical axis names and config rules."""
  return sharding.param_shardings(mesh, abstract_state(module, tx, freeze_embeddings, extra),
                                  rules)


def create_state(params: dict, tx, shardings: TrainState, freeze_embeddings: bool) -> TrainState:
  """A TrainState at step 0 from pretrained params, placed with `shardings`."""
  trainable, frozen = split_params(params, freeze_embeddings)
  trainable = jax.device_put(trainable, shardings.params)
  frozen = jax.device_put(frozen, shardings.frozen)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(trainable)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=trainable, frozen=frozen, opt_state=opt_state)


class Adversarial(NamedTuple):
  """config.train.adversarial as train_step takes it, with the run's steps (lambda schedule)."""

  weight: float
  schedule: str
  lambda_max: float
  hidden: int
  steps: int


def jit_train_step(module, tx, shardings: TrainState, mesh, train_config, seed: int,
                   rules=()):
  """train_step jitted over the mesh: state sharded as `shardings` and donated, batch split over
  data x fsdp, hidden states constrained by the logical axis `rules` (config.mesh.rules)."""
  adversarial = train_config.adversarial
  fn = functools.partial(train_step, module=module, tx=tx, seed=seed,
                         temperature=train_config.loss_temperature,
                         symmetric=train_config.symmetric_loss,
                         accum_steps=train_config.grad_accum_steps,
                         parallel_query=train_config.parallel_query_weight,
                         parallel_passage=train_config.parallel_passage_weight,
                         adversarial=Adversarial(adversarial.weight, adversarial.schedule,
                                                 adversarial.lambda_max, adversarial.hidden,
                                                 train_config.steps),
                         pack_texts=train_config.pack_texts)
  return jax.jit(sharding.with_activation_rules(fn, mesh, rules),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def jit_eval_step(module, shardings: TrainState, mesh, train_config, rules=()):
  """eval_step jitted over the mesh."""
  fn = functools.partial(eval_step, module=module, temperature=train_config.loss_temperature,
                         symmetric=train_config.symmetric_loss)  # validation: one text per row
  return jax.jit(sharding.with_activation_rules(fn, mesh, rules),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))
