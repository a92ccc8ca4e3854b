"""Tests of hbt.model.weights.load_hf on tiny HF checkpoints written to tmp_path (no network).

One tiny checkpoint per model family, in the layout of its hub repo: config.json from transformers'
config class, random float32 weights under HF names in model.safetensors, a tokenizer, and for the
sentence-transformers models (mE5, LaBSE) their modules. Each is loaded with `load_hf` (pooling
'auto', as the family's hub repo would be), run through the Flax encoder in float32 and compared
with an independent NumPy forward pass (float64), with transformers' own PyTorch model loaded from
the same folder, and for the sentence-transformers families with sentence-transformers itself.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as st_numpy
import sentence_transformers
import tokenizers
from tokenizers import models, pre_tokenizers, processors
import torch
import transformers

from configs import default
from configs import models as model_configs
from hbt.model import build
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib
from hbt.model import weights

QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH = 'query: ', 'passage: ', 64
HIDDEN, LAYERS, HEADS, MLP, MAX_POSITIONS, VOCAB = 32, 2, 4, 64, 40, 100
WORDS = ('query passage : , . ? the a cat dog sat on mat where is my hat red green blue big small '
         'house tree river city why how what who when one two three four five').split()
TEXTS = [
    'the cat sat on the mat .',
    'where is my red hat ?',
    'dog',
    'big small house , tree river city one two three four five',
    # Longer than the model allows: exercises truncation and the last position rows.
    ' '.join(WORDS[5:] * 3),
    'an out - of - vocabulary word or two',  # <unk> ids
]
# style -> (special tokens in id order, bos, eos, pad, unk, position offset).
STYLES = {
    'xlm-roberta': (('<s>', '<pad>', '</s>', '<unk>'), '<s>', '</s>', '<pad>', '<unk>', 2),
    'bert': (('[PAD]', '[UNK]', '[CLS]', '[SEP]'), '[CLS]', '[SEP]', '[PAD]', '[UNK]', 0),
}
# family -> (style, tensor-name prefix, tokenizer file, sentence-transformers pooling or None,
#            pooling asked of load_hf, the pooling that results).
FAMILIES = {
    'xlmr': ('xlm-roberta', '', 'json', None, 'auto', 'mean'),  # xlm-roberta-base/large
    'xlmr-prefixed': ('xlm-roberta', 'roberta.', 'json', None, 'cls', 'cls'),
    'mbert': ('bert', '', 'vocab', None, 'auto', 'mean'),  # bert-base-multilingual-cased
    'mbert-prefixed': ('bert', 'bert.', 'json', None, 'cls', 'cls'),
    'e5': ('xlm-roberta', '', 'json', 'mean', 'auto', 'mean'),  # intfloat/multilingual-e5-*
    'labse': ('bert', '', 'json', 'cls_dense', 'auto', 'cls_pooler'),  # sentence-transformers/LaBSE
    'labse-hf': ('bert', 'bert.', 'json', None, 'cls_pooler', 'cls_pooler'),  # BertModel + pooler
}


def make_tokenizer(style: str) -> tokenizers.Tokenizer:
  """A WordLevel tokenizer: specials first, then WORDS; '<bos> $A <eos>' post-processor."""
  specials, bos, eos, _, unk, _ = STYLES[style]
  vocab = {t: i for i, t in enumerate(specials + tuple(WORDS))}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=unk))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single=f'{bos} $A {eos}', special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
  tok.add_special_tokens(list(specials))
  return tok


def make_config(style: str) -> transformers.PretrainedConfig:
  """A tiny transformers config of the style (XLM-R: pad 1, 1 token type; BERT: pad 0, 2 types)."""
  specials, bos, eos, pad, _, _ = STYLES[style]
  ids = {t: i for i, t in enumerate(specials)}
  common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, intermediate_size=MLP,
                max_position_embeddings=MAX_POSITIONS, hidden_act='gelu', pad_token_id=ids[pad])
  if style == 'bert':
    return transformers.BertConfig(type_vocab_size=2, layer_norm_eps=1e-12, **common)
  return transformers.XLMRobertaConfig(type_vocab_size=1, layer_norm_eps=1e-5,
                                       bos_token_id=ids[bos], eos_token_id=ids[eos], **common)


def random_state(config, seed: int) -> dict[str, np.ndarray]:
  """Random float32 weights under HF names (no prefix), scaled so every part matters."""
  rng = np.random.default_rng(seed)
  h, m = config.hidden_size, config.intermediate_size
  normal = lambda *shape, scale=0.3: (rng.standard_normal(shape) * scale).astype(np.float32)
  ln = lambda p: {p + '.weight': 1.0 + normal(h, scale=0.2), p + '.bias': normal(h, scale=0.1)}
  state = {
      'embeddings.word_embeddings.weight': normal(config.vocab_size, h, scale=1.0),
      'embeddings.position_embeddings.weight': normal(config.max_position_embeddings, h,
                                                      scale=1.0),
      'embeddings.token_type_embeddings.weight': normal(config.type_vocab_size, h, scale=1.0),
      **ln('embeddings.LayerNorm'),
      'pooler.dense.weight': normal(h, h, scale=1.0 / math.sqrt(h)),
      'pooler.dense.bias': normal(h, scale=0.1),
  }
  for i in range(config.num_hidden_layers):
    p = f'encoder.layer.{i}.'
    for name, (out, inp) in {'attention.self.query': (h, h), 'attention.self.key': (h, h),
                             'attention.self.value': (h, h), 'attention.output.dense': (h, h),
                             'intermediate.dense': (m, h), 'output.dense': (h, m)}.items():
      state[p + name + '.weight'] = normal(out, inp, scale=1.0 / math.sqrt(inp))
      state[p + name + '.bias'] = normal(out, scale=0.1)
    state.update(ln(p + 'attention.output.LayerNorm'))
    state.update(ln(p + 'output.LayerNorm'))
  return state


def write_vocab(folder, style: str) -> None:
  """A WordPiece vocab.txt (specials, then WORDS) and the tokenizer_config.json of a cased BERT."""
  specials = STYLES[style][0]
  (folder / 'vocab.txt').write_text('\n'.join(specials + tuple(WORDS)) + '\n')
  (folder / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': False}))


def write_st_modules(folder, pooling: str, dense: dict | None = None) -> None:
  """sentence-transformers modules (v2-v5 layout): Pooling, [Tanh Dense], Normalize."""
  mods = [('', 'sentence_transformers.models.Transformer')]
  mods.append(('1_Pooling', 'sentence_transformers.models.Pooling'))
  (folder / '1_Pooling').mkdir()
  (folder / '1_Pooling' / 'config.json').write_text(json.dumps({
      'word_embedding_dimension': HIDDEN, 'pooling_mode_cls_token': pooling == 'cls',
      'pooling_mode_mean_tokens': pooling == 'mean', 'pooling_mode_max_tokens': False,
      'pooling_mode_mean_sqrt_len_tokens': False}))
  if dense is not None:
    mods.append(('2_Dense', 'sentence_transformers.models.Dense'))
    (folder / '2_Dense').mkdir()
    (folder / '2_Dense' / 'config.json').write_text(json.dumps({
        'in_features': HIDDEN, 'out_features': HIDDEN, 'bias': True,
        'activation_function': 'torch.nn.modules.activation.Tanh'}))
    st_numpy.save_file({'linear.weight': dense['weight'], 'linear.bias': dense['bias']},
                       str(folder / '2_Dense' / 'model.safetensors'))
  mods.append((f'{len(mods)}_Normalize', 'sentence_transformers.models.Normalize'))
  (folder / 'modules.json').write_text(json.dumps(
      [{'idx': i, 'name': str(i), 'path': path, 'type': kind}
       for i, (path, kind) in enumerate(mods)]))
  (folder / 'sentence_bert_config.json').write_text(json.dumps({'max_seq_length': MAX_LENGTH,
                                                                'do_lower_case': False}))


def write_checkpoint(folder, family: str, seed: int = 0) -> dict:
  """Writes the family's files; returns the unprefixed state that its embeddings come from."""
  style, prefix, tok_file, st_pooling, _, _ = FAMILIES[family]
  config = make_config(style)
  config.save_pretrained(folder)
  state = random_state(config, seed)
  stored = {prefix + k: v for k, v in state.items()}
  if prefix:  # a head checkpoint also holds tensors the encoder does not use
    stored['lm_head.bias'] = np.zeros(VOCAB, np.float32)
  st_numpy.save_file(stored, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
  if tok_file == 'json':
    make_tokenizer(style).save(str(folder / 'tokenizer.json'))
    # transformers' XLM-R/BERT tokenizer classes rebuild their own model; this one is WordLevel.
    (folder / 'tokenizer_config.json').write_text(json.dumps(
        {'tokenizer_class': 'PreTrainedTokenizerFast', 'pad_token': STYLES[style][3]}))
  else:
    write_vocab(folder, style)
  if st_pooling:
    dense = None
    if st_pooling == 'cls_dense':  # LaBSE: its pooler is the sentence-transformers Dense
      rng = np.random.default_rng(seed + 1)
      dense = {'weight': (rng.standard_normal((HIDDEN, HIDDEN)) / 6).astype(np.float32),
               'bias': (rng.standard_normal(HIDDEN) / 10).astype(np.float32)}
      state = {**state, 'pooler.dense.weight': dense['weight'],
               'pooler.dense.bias': dense['bias']}
    write_st_modules(folder, st_pooling.split('_')[0], dense)
  return state


def layer_norm(x, w, b, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def reference_forward(state, config, ids, mask, style: str, pooling: str) -> np.ndarray:
  """Independent float64 NumPy forward: embeddings, post-LN layers, pooling, L2 norm."""
  s = {k: v.astype(np.float64) for k, v in state.items()}
  eps, heads = config.layer_norm_eps, config.num_attention_heads
  if style == 'bert':
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
  else:  # XLM-R numbers real tokens from pad_id + 1 (HF create_position_ids_from_input_ids)
    real = (ids != config.pad_token_id).astype(np.int64)
    positions = np.cumsum(real, axis=1) * real + config.pad_token_id
  x = (s['embeddings.word_embeddings.weight'][ids]
       + s['embeddings.position_embeddings.weight'][positions]
       + s['embeddings.token_type_embeddings.weight'][0])
  x = layer_norm(x, s['embeddings.LayerNorm.weight'], s['embeddings.LayerNorm.bias'], eps)
  batch, length, hidden = x.shape
  dh = hidden // heads
  linear = lambda y, name: y @ s[name + '.weight'].T + s[name + '.bias']
  for i in range(config.num_hidden_layers):
    p = f'encoder.layer.{i}.'
    split = lambda y: y.reshape(batch, length, heads, dh).transpose(0, 2, 1, 3)
    q, k, v = (split(linear(x, p + 'attention.self.' + n)) for n in ('query', 'key', 'value'))
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    x = layer_norm(x + linear(ctx, p + 'attention.output.dense'),
                   s[p + 'attention.output.LayerNorm.weight'],
                   s[p + 'attention.output.LayerNorm.bias'], eps)
    h = linear(gelu(linear(x, p + 'intermediate.dense')), p + 'output.dense')
    x = layer_norm(x + h, s[p + 'output.LayerNorm.weight'], s[p + 'output.LayerNorm.bias'], eps)
  if pooling == 'mean':
    m = mask[..., None].astype(np.float64)
    pooled = (x * m).sum(1) / m.sum(1)
  else:
    pooled = x[:, 0]
    if pooling == 'cls_pooler':
      pooled = np.tanh(linear(pooled, 'pooler.dense'))
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def flax_forward(arch, params, ids, mask, pooling: str) -> np.ndarray:
  module = encoder.Encoder(arch, pooling=pooling, dtype=np.float32)
  return np.asarray(jax.jit(module.apply)({'params': params}, ids, mask))


def transformers_forward(folder, style, state, ids, mask, pooling: str) -> np.ndarray:
  """transformers' PyTorch model from the folder (float32), pooled as `pooling`, L2-normalised."""
  cls = transformers.BertModel if style == 'bert' else transformers.XLMRobertaModel
  model = cls.from_pretrained(str(folder)).eval()
  with torch.inference_mode():
    out = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long())
    hidden = out.last_hidden_state
    if pooling == 'mean':
      m = torch.from_numpy(mask)[..., None].float()
      pooled = (hidden * m).sum(1) / m.sum(1)
    elif pooling == 'cls':
      pooled = hidden[:, 0]
    else:  # the pooler: BERT's own, or the sentence-transformers Dense that replaces it
      w, b = (torch.from_numpy(state[f'pooler.dense.{n}']) for n in ('weight', 'bias'))
      pooled = torch.tanh(torch.nn.functional.linear(hidden[:, 0], w, b))
      if np.array_equal(state['pooler.dense.weight'], model.pooler.dense.weight.numpy()):
        torch.testing.assert_close(pooled, out.pooler_output)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.fixture(scope='module', params=list(FAMILIES))
def checkpoint(request, tmp_path_factory):
  """(family, folder, state, config, loaded (arch, params, tokenizer, pooling), ids, mask)."""
  family = request.param
  folder = tmp_path_factory.mktemp(family)
  state = write_checkpoint(folder, family)
  style, _, _, _, asked, _ = FAMILIES[family]
  loaded = weights.load_hf(str(folder), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH, asked)
  seqs = loaded[2].encode(TEXTS, 'query')
  ids, mask = tokenizer_lib.pad_batch(seqs, max(len(s) for s in seqs), loaded[2].pad_id)
  return family, folder, state, make_config(style), loaded, ids, mask


def test_arch_pooling_and_tokenizer(checkpoint):
  family, folder, _, config, (arch, params, tok, pooling), ids, mask = checkpoint
  style = FAMILIES[family][0]
  specials, bos, eos, pad, unk, offset = STYLES[style]
  sid = {t: i for i, t in enumerate(specials)}
  assert pooling == FAMILIES[family][5]
  assert arch == encoder.Arch(
      vocab_size=VOCAB, hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP,
      max_positions=MAX_POSITIONS, type_vocab_size=config.type_vocab_size,
      position_offset=offset, layer_norm_eps=config.layer_norm_eps, pad_id=sid[pad])
  assert params['layers']['query']['kernel'].shape == (LAYERS, HIDDEN, HIDDEN)
  assert params['layers']['mlp_in']['kernel'].shape == (LAYERS, HIDDEN, MLP)
  assert ('pooler' in params) == (pooling == 'cls_pooler')
  assert tok.pad_id == sid[pad]
  assert tok.max_length == min(MAX_LENGTH, MAX_POSITIONS - offset)
  word = {w: len(specials) + i for i, w in enumerate(WORDS)}
  first, passage = tok.encode([TEXTS[2]], 'query')[0], tok.encode([TEXTS[2]], 'passage')[0]
  np.testing.assert_array_equal(first, [sid[bos], word['query'], word[':'], word['dog'], sid[eos]])
  np.testing.assert_array_equal(passage, [sid[bos], word['passage'], word[':'], word['dog'],
                                          sid[eos]])
  lengths = mask.sum(1)
  assert lengths.max() == tok.max_length  # the long text is truncated ...
  assert ids[4, tok.max_length - 1] == sid[eos]  # ... keeping its closing token
  assert sid[unk] in ids[5]
  # transformers' tokenizer of the same folder gives the same ids (up to hbt's truncation).
  theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
  for text, ours in zip(TEXTS, tok.encode(TEXTS, 'query')):
    expected = np.asarray(theirs(QUERY_PREFIX + text)['input_ids'])
    np.testing.assert_array_equal(ours, tokenizer_lib.truncate(expected, tok.max_length))


def test_flax_matches_numpy_reference(checkpoint):
  family, _, state, config, (arch, params, _, pooling), ids, mask = checkpoint
  ours = flax_forward(arch, params, ids, mask, pooling)
  ref = reference_forward(state, config, ids, mask, FAMILIES[family][0], pooling)
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
  # Not trivially equal: the texts get distinct embeddings.
  assert np.linalg.norm(ours[0] - ours[1]) > 0.1


def test_flax_matches_transformers_torch(checkpoint):
  family, folder, state, _, (arch, params, _, pooling), ids, mask = checkpoint
  theirs = transformers_forward(folder, FAMILIES[family][0], state, ids, mask, pooling)
  ours = flax_forward(arch, params, ids, mask, pooling)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize('family', ['e5', 'labse'])
def test_flax_matches_sentence_transformers(tmp_path, family):
  """The families whose hub repos are sentence-transformers models: their embeddings exactly."""
  write_checkpoint(tmp_path, family)
  arch, params, tok, pooling = weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX,
                                               MAX_LENGTH)
  texts = TEXTS[:4]
  seqs = tok.encode(texts, 'passage')
  ids, mask = tokenizer_lib.pad_batch(seqs, max(len(s) for s in seqs), tok.pad_id)
  ours = flax_forward(arch, params, ids, mask, pooling)
  model = sentence_transformers.SentenceTransformer(str(tmp_path), device='cpu')
  theirs = model.encode(texts, prompt=PASSAGE_PREFIX, convert_to_numpy=True)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize('missing', ['config.json', 'model.safetensors', 'tokenizer.json'])
def test_missing_file_is_named(tmp_path, missing):
  write_checkpoint(tmp_path, 'xlmr')
  (tmp_path / missing).unlink()
  with pytest.raises(FileNotFoundError, match=rf'{missing} is missing'):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)


def test_cls_pooler_without_a_pooler_is_rejected(tmp_path):
  write_checkpoint(tmp_path, 'xlmr')
  state = st_numpy.load_file(str(tmp_path / 'model.safetensors'))
  del state['pooler.dense.weight'], state['pooler.dense.bias']
  st_numpy.save_file(state, str(tmp_path / 'model.safetensors'))
  with pytest.raises(KeyError, match="lacks tensor 'pooler.dense.weight'.*'cls_pooler'"):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH, 'cls_pooler')


def test_bfloat16_and_sharded_safetensors(tmp_path):
  """A bf16 checkpoint in two shards loads as the float32 of the same values."""
  state = write_checkpoint(tmp_path, 'xlmr')
  full = weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)[1]
  (tmp_path / 'model.safetensors').unlink()
  names = sorted(state)
  halves = {'model-00001-of-00002.safetensors': names[:10],
            'model-00002-of-00002.safetensors': names[10:]}
  for file, keys in halves.items():
    tensors = {k: torch.from_numpy(state[k]).bfloat16() for k in keys}
    import safetensors.torch  # pylint: disable=g-import-not-at-top
    safetensors.torch.save_file(tensors, str(tmp_path / file))
  (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(
      {'weight_map': {k: f for f, keys in halves.items() for k in keys}}))
  half = weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)[1]
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=1 / 128, atol=1e-6)


def _hub_offline(monkeypatch, tmp_path):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))


def test_hub_id_offline_fails_with_one_clear_line(tmp_path, monkeypatch):
  _hub_offline(monkeypatch, tmp_path)
  name = 'hbt-test-org/no-such-checkpoint'
  with pytest.raises(ValueError) as info:
    weights.load_hf(name, QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)
  message = str(info.value)
  assert '\n' not in message
  assert repr(name) in message
  assert 'offline' in message and 'HF_HUB_OFFLINE' in message and 'HF_HOME' in message
  assert 'local folder with config.json, model.safetensors and tokenizer.json' in message


def test_hub_id_unreachable_fails_with_the_same_message(tmp_path, monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
  monkeypatch.setattr(huggingface_hub.constants, 'ENDPOINT', 'http://127.0.0.1:9')  # refused
  with pytest.raises(ValueError, match=r"'hbt-test-org/unreachable' .* \(offline\)"):
    weights.load_hf('hbt-test-org/unreachable', QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)


def test_hub_id_loads_from_the_hub_cache(tmp_path, monkeypatch):
  """A hub id already in the HF cache (as snapshot_download leaves it) loads offline."""
  _hub_offline(monkeypatch, tmp_path)
  repo = tmp_path / 'hub' / 'models--hbt-test-org--tiny-e5'
  revision = '0' * 40
  snapshot = repo / 'snapshots' / revision
  snapshot.mkdir(parents=True)
  state = write_checkpoint(snapshot, 'e5')
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(revision)
  arch, params, tok, pooling = weights.load_hf('hbt-test-org/tiny-e5', QUERY_PREFIX,
                                               PASSAGE_PREFIX, MAX_LENGTH)
  assert pooling == 'mean' and arch.hidden == HIDDEN and tok.pad_id == 1
  np.testing.assert_array_equal(params['word_embeddings'],
                                state['embeddings.word_embeddings.weight'])


@pytest.mark.parametrize('name', ['xlmr_base', 'xlmr_large', 'mbert', 'labse', 'me5_base',
                                  'me5_large'])
def test_model_configs_offline_name_their_hub_id(tmp_path, monkeypatch, name):
  """configs/models.py:NAME, offline and not cached: the one-line message names the hub id."""
  _hub_offline(monkeypatch, tmp_path)
  config = model_configs.get_config(name)
  with pytest.raises(ValueError, match=f"'{config.model.checkpoint}' is not a local folder .* "
                                       r'\(offline\)'):
    build.load(config.model)


def test_config_arch_must_match_the_checkpoint(tmp_path):
  write_checkpoint(tmp_path, 'labse')
  config = default.get_config()
  config.model.source, config.model.checkpoint = 'hf', str(tmp_path)
  config.model.arch = dict(model_configs.MODELS['labse'][3], vocab_size=VOCAB, hidden=HIDDEN,
                           layers=LAYERS, heads=HEADS, mlp=MLP, max_positions=MAX_POSITIONS)
  model = build.load(config.model)  # the tiny LaBSE: the same arch but for its size
  assert model.module.pooling == 'cls_pooler' and 'pooler' in model.params
  assert model.module.attention == 'matmul'
  config.model.attention = 'fused'  # config.model.attention reaches the module
  assert build.load(config.model).module.attention == 'fused'
  config.model.arch.layers = 12
  with pytest.raises(ValueError, match=r'config.model.arch does not match .*layers: 12 in '
                                       r'config.model.arch, 2 in the checkpoint'):
    build.load(config.model)


def test_hub_files_cover_each_family(tmp_path):
  """Every file load_hf reads for a family matches one of the patterns it downloads."""
  import fnmatch  # pylint: disable=g-import-not-at-top
  for family in FAMILIES:
    folder = tmp_path / family
    folder.mkdir()
    write_checkpoint(folder, family)
    for path in folder.rglob('*'):
      name = path.relative_to(folder).as_posix()
      if path.is_file() and name != 'sentence_bert_config.json':
        assert any(fnmatch.fnmatch(name, p) for p in weights.HUB_FILES), name


@pytest.mark.parametrize('change, error', [
    ({'model_type': 'gpt2'}, "unsupported model_type 'gpt2'"),
    ({'model_type': 'deberta-v2'}, "unsupported model_type 'deberta-v2'"),
    ({'hidden_act': 'relu'}, "unsupported hidden_act 'relu'"),
    ({'model_type': 'xlm-roberta-xl'}, "unsupported model_type 'xlm-roberta-xl'"),  # XL and XXL
], ids=['gpt2', 'deberta-v2', 'relu', 'xlm-roberta-xl'])
def test_unsupported_config_is_rejected(tmp_path, change, error):
  write_checkpoint(tmp_path, 'xlmr')
  config = json.loads((tmp_path / 'config.json').read_text())
  config.update(change)
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(ValueError, match=error):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)
  with pytest.raises(ValueError, match=error):
    weights.hf_arch(config)


def test_unsupported_sentence_transformers_pooling_is_rejected(tmp_path):
  write_checkpoint(tmp_path, 'e5')
  path = tmp_path / '1_Pooling' / 'config.json'
  config = json.loads(path.read_text())
  config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
  path.write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"1_Pooling/config.json: pooling 'max_tokens'"):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)


def test_rows_longer_than_the_position_table_fail_instead_of_nan():
  """jnp.take past the position table would fill the embeddings with NaN, silently."""
  arch = encoder.Arch(vocab_size=32, hidden=8, layers=1, heads=2, mlp=16, max_positions=10,
                      type_vocab_size=1, position_offset=2, layer_norm_eps=1e-5, pad_id=1)
  module = encoder.Encoder(arch)
  ok = jnp.ones((2, 8), jnp.int32)
  params = module.init(jax.random.key(0), ok, ok)
  assert jnp.isfinite(module.apply(params, ok, ok)).all()
  too_long = jnp.ones((2, 9), jnp.int32)
  with pytest.raises(ValueError, match=r'rows of 9 tokens need 11 positions; the model has 10'):
    module.apply(params, too_long, too_long)
