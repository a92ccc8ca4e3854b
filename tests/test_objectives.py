"""The extra training objectives: gradient reversal and the language discriminator (DANN), the
alignment terms between parallel translations (against NumPy), and the train step with them on."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hbt.batches import input_pipeline
from hbt.batches import sampler as sampler_lib
from hbt.batches import shards
from hbt.experiments import sweep as sweep_lib
from hbt.train import adversarial
from hbt.train import loop
from hbt.train import loss as loss_lib
from hbt.train import step as step_lib
from tests import test_shards as ts
from tests import test_train_step as tts
from tests.test_shards import pairs, sampler, tokenizer  # pylint: disable=unused-import (fixtures)


@pytest.mark.parametrize('lam', [0.0, 0.3, 2.0])
def test_reversal_is_identity_forward_and_flips_the_gradient(lam):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
  np.testing.assert_array_equal(adversarial.reverse_gradient(x, jnp.float32(lam)), x)
  f = lambda x: jnp.sum(w * jnp.tanh(x))
  plain = jax.grad(f)(x)
  reversed_ = jax.grad(lambda x: f(adversarial.reverse_gradient(x, jnp.float32(lam))))(x)
  np.testing.assert_allclose(reversed_, -lam * plain, rtol=1e-6)


def test_lambda_schedules():
  got = [float(adversarial.lambda_at(s, 100, 'dann', 0.5)) for s in (0, 10, 100)]
  want = [0.5 * (2 / (1 + np.exp(-10 * p)) - 1) for p in (0.0, 0.1, 1.0)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0] == 0.0
  assert float(adversarial.lambda_at(37, 100, 'constant', 0.7)) == pytest.approx(0.7)


@pytest.mark.parametrize('hidden', [0, 16])
def test_discriminator_learns_separable_languages(hidden):
  """The reversal acts on the embeddings only: the discriminator's own params still descend."""
  rng = np.random.default_rng(0)
  langs = np.array([input_pipeline.LANGS.index(l) for l in ('de', 'en', 'th')])
  centres = rng.normal(size=(3, 8))
  labels = rng.integers(0, 3, size=96)
  emb = jnp.asarray(centres[labels] + 0.3 * rng.normal(size=(96, 8)), jnp.float32)
  target = jnp.asarray(langs[labels], jnp.int32)
  config = type('A', (), {'hidden': hidden})
  params = adversarial.init_params(config, 8, seed=0)
  tx = optax.adam(3e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    (loss, acc), grads = jax.value_and_grad(
        lambda p: adversarial.loss_and_accuracy(p, emb, target, jnp.float32(1.0), hidden=hidden),
        has_aux=True)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, loss, acc

  _, _, first_loss, first_acc = step(params, opt)
  for _ in range(150):
    params, opt, loss, acc = step(params, opt)
  assert float(first_acc) < 0.7 and float(acc) > 0.95 and float(loss) < 0.5 * float(first_loss)


def numpy_parallel(a, b, rows, t, groups=None):
  """Reference alignment InfoNCE in float64: mean over `rows` of -log softmax_i(a_i . b / t)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  losses = []
  for i in np.flatnonzero(rows):
    keep = [j for j in range(len(b)) if j == i or groups is None or groups[j] != groups[i]]
    logits = a[i] @ b[keep].T / t
    top = logits.max()
    losses.append(top + np.log(np.exp(logits - top).sum()) - a[i] @ b[i] / t)
  return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize('masked', [False, True])
def test_parallel_info_nce_matches_numpy(masked):
  rng = np.random.default_rng(2)
  a, b = tts.unit(rng.normal(size=(10, 6))), tts.unit(rng.normal(size=(10, 6)))
  rows = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], bool)
  groups = np.array([0, 1, 2, 1, 4, 5, 0, 7, 8, 9]) if masked else None
  got = loss_lib.parallel_info_nce(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                   jnp.asarray(rows), temperature=0.1,
                                   groups=None if groups is None else jnp.asarray(groups))
  np.testing.assert_allclose(float(got), numpy_parallel(a, b, rows, 0.1, groups), rtol=1e-5)
  none = loss_lib.parallel_info_nce(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                    jnp.zeros(10, bool), temperature=0.1)
  assert float(none) == 0.0


def objective_batch(seed):
  """A tts.make_batch with parallel sides, positive groups and language ids (half cross rows)."""
  batch = tts.make_batch(seed=seed)
  side = tts.make_batch(seed=seed + 100)
  batch['query2_tokens'], batch['query2_mask'] = side['query_tokens'], side['query_mask']
  batch['positive2_tokens'], batch['positive2_mask'] = side['positive_tokens'], side['positive_mask']
  groups = np.arange(16, dtype=np.int32)
  groups[[0, 9]] = 0
  batch['query_group'] = batch['positive_group'] = groups
  rng = np.random.default_rng(seed)
  batch['query_lang'] = rng.integers(0, 5, 16).astype(np.int32)
  batch['positive_lang'] = np.where(np.arange(16) % 2, batch['query_lang'],
                                    rng.integers(0, 5, 16)).astype(np.int32)
  return batch


def objective_config(**overrides):
  return tts.train_config(parallel_query_weight=0.5, parallel_passage_weight=0.25,
                          adversarial=dict(weight=0.3, schedule='dann', lambda_max=1.0,
                                           hidden=8, lr_multiplier=1.0), **overrides)


def test_step_with_every_term_eight_devices_equal_one():
  batches = [objective_batch(s) for s in range(2)]
  one, m1 = tts.run_steps(jax.devices()[:1], objective_config(), batches)
  eight, m8 = tts.run_steps(jax.devices(), objective_config(), batches)
  tts.assert_trees_close(one, eight, 1e-5)
  assert adversarial.NAME in one
  for key in ('loss', 'info_nce', 'query_query_loss', 'passage_passage_loss', 'adversarial_loss',
              'adversarial_accuracy', 'adversarial_lambda'):
    np.testing.assert_allclose([m[key] for m in m1], [m[key] for m in m8], rtol=1e-5, atol=1e-6)
  m = m1[1]
  assert m['adversarial_lambda'] == pytest.approx(2 / (1 + np.exp(-1.0)) - 1, rel=1e-5)
  np.testing.assert_allclose(m['loss'], m['info_nce'] + 0.5 * m['query_query_loss'] +
                             0.25 * m['passage_passage_loss'] + 0.3 * m['adversarial_loss'],
                             rtol=1e-5)


def test_step_terms_move_the_params():
  """Each term on its own changes the update (a term that did nothing would leave it equal)."""
  batches = [objective_batch(0)]
  base, _ = tts.run_steps(jax.devices()[:1], tts.train_config(warmup_steps=0), batches,
                         dropout=0.0)
  for overrides in ({'parallel_query_weight': 1.0}, {'parallel_passage_weight': 1.0},
                    {'adversarial': dict(weight=1.0, schedule='constant', lambda_max=1.0,
                                         hidden=0, lr_multiplier=1.0)}):
    moved, _ = tts.run_steps(jax.devices()[:1], tts.train_config(warmup_steps=0, **overrides),
                             batches,
                             dropout=0.0)
    diff = max(float(np.abs(moved['layers']['query']['kernel'] -
                            base['layers']['query']['kernel']).max()), 0.0)
    assert diff > 1e-6, overrides


def test_symmetric_loss_is_the_mean_of_both_directions():
  """train.symmetric_loss reaches the step: its loss is the mean of query -> passage and passage ->
  query, the second being the plain loss of the batch with the two sides swapped."""
  batch = tts.make_batch(seed=5)
  swapped = {'query_tokens': batch['positive_tokens'], 'query_mask': batch['positive_mask'],
             'positive_tokens': batch['query_tokens'], 'positive_mask': batch['query_mask']}

  def loss(b, **overrides):
    _, metrics = tts.run_steps(jax.devices()[:1], tts.train_config(**overrides), [b],
                               dropout=0.0)
    return metrics[0]['loss']

  forward, backward = loss(batch), loss(swapped)
  assert abs(forward - backward) > 1e-3  # the two directions differ on this batch
  assert loss(batch, symmetric_loss=True) == pytest.approx((forward + backward) / 2, rel=1e-5)


def test_grad_cache_with_every_term_equals_full_batch():
  batches = [objective_batch(3)]
  full, mf = tts.run_steps(jax.devices()[:1], objective_config(), batches)
  accum, ma = tts.run_steps(jax.devices()[:1], objective_config(grad_accum_steps=4), batches)
  np.testing.assert_allclose(mf[0]['loss'], ma[0]['loss'], rtol=1e-5)
  tts.assert_trees_close(full, accum, 1e-5)


def test_discriminator_lr_multiplier_scales_its_updates_only():
  """adversarial.lr_multiplier m: the discriminator's first update is m times the one at m = 1
  (Adam's first step does not depend on the gradient's scale), the encoder's is unchanged."""
  batches = [objective_batch(0)]
  adv = lambda m: dict(weight=1.0, schedule='constant', lambda_max=1.0, hidden=0, lr_multiplier=m)
  start, _ = tts.run_steps(jax.devices()[:1], tts.train_config(warmup_steps=0, adversarial=adv(1.0)),
                           [], dropout=0.0)
  one, _ = tts.run_steps(jax.devices()[:1], tts.train_config(warmup_steps=0, adversarial=adv(1.0)),
                         batches, dropout=0.0)
  ten, _ = tts.run_steps(jax.devices()[:1], tts.train_config(warmup_steps=0, adversarial=adv(10.0)),
                         batches, dropout=0.0)
  encoder = lambda p: {k: v for k, v in p.items() if k != adversarial.NAME}
  tts.assert_trees_close(encoder(one), encoder(ten), 0.0)
  step = lambda p: jax.tree.map(lambda a, b: a - b, p[adversarial.NAME], start[adversarial.NAME])
  moved = step(one)
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(moved)) > 1e-4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 10 * a, rtol=1e-4, atol=1e-7),
               moved, step(ten))


def test_decay_mask_covers_the_discriminator():
  params = {adversarial.NAME: adversarial.init_params(type('A', (), {'hidden': 4}), 8, 0)}
  mask = step_lib.weight_decay_mask(params)[adversarial.NAME]
  assert mask['hidden']['kernel'] and not mask['hidden']['bias'] and mask['logits']['kernel']


def test_parallel_sides_and_language_ids_round_trip(tmp_path, sampler, pairs, tokenizer):
  """Shards prepared with parallel=True hold each id's query in the positive's language and its
  positive in the query's language; every batch has the language ids of input_pipeline.LANGS."""
  plain = ts._prepare(tmp_path, sampler, pairs, tokenizer, num_steps=6)
  folder = ts._prepare(tmp_path, sampler, pairs, tokenizer, num_steps=6, parallel=True)
  assert folder != plain and json.loads((folder / shards.MANIFEST).read_text())['parallel']
  assert 'query2_tokens' not in ts._read(plain)[0]
  kinds = set()
  for got in ts._read(folder):
    batch = sampler.batch(got['step'])
    kinds.add(batch.kind)
    swapped = dataclasses.replace(batch, query_langs=batch.positive_langs,
                                  positive_langs=batch.query_langs)
    queries2, positives2 = sampler_lib.batch_texts(pairs, swapped)
    ts._check_side(got['query2_tokens'], got['query2_mask'],
                   ts._expected(tokenizer, queries2, 'query', ts.MAX_Q), ts.MAX_Q,
                   tokenizer.pad_id)
    ts._check_side(got['positive2_tokens'], got['positive2_mask'],
                   ts._expected(tokenizer, positives2, 'passage', ts.MAX_P), ts.MAX_P,
                   tokenizer.pad_id)
    for side, langs in (('query', batch.query_langs), ('positive', batch.positive_langs)):
      assert [input_pipeline.LANGS[i] for i in got[f'{side}_lang']] == list(langs)
  assert kinds == {'mono', 'cross'}


@pytest.mark.parametrize('path, arms', [
    ('configs/sweeps/objectives.py', 5), ('configs/sweeps/adversarial.py', 5)])
def test_sweeps_are_valid_at_the_strategies_budget(path, arms):
  spec = sweep_lib.load_sweep(path)
  assert len(spec['arms']) == arms
  assert spec['budget'] == sweep_lib.load_sweep('configs/sweeps/strategies_t0_01.py')['budget']


def test_training_loop_logs_every_term(tiny_checkpoint, data_dir, tmp_path):
  """The real loop with every term on: shards with parallel sides and language ids, the
  discriminator in the checkpointed state, its loss and accuracy in metrics.jsonl."""
  from tests import test_train as tt  # pylint: disable=g-import-not-at-top
  config = tt.tiny_config(tiny_checkpoint, data_dir, 2, **{
      'mode': 'train', 'train.parallel_query_weight': 0.5, 'train.parallel_passage_weight': 0.5,
      'train.adversarial.weight': 0.1, 'train.adversarial.hidden': 8,
      'train.strategy': 'x_y'})
  loop.run(config, str(tmp_path))
  last = {k: v for r in tt.read_metrics(tmp_path) for k, v in r.items()}
  for name in ('train/query_query_loss', 'train/passage_passage_loss', 'train/adversarial_loss',
               'train/adversarial_accuracy', 'train/info_nce'):
    assert np.isfinite(last[name]) and last[name] >= 0, name
  assert last['train/query_query_loss'] > 0 and 0 < last['train/adversarial_lambda'] < 1
