"""Tests of hbt.model.weights.load_hf on tiny HF checkpoints written to tmp_path (no network).

Each checkpoint (config.json from transformers' config class, random float32 weights under HF names
in model.safetensors, a WordLevel tokenizer.json) is loaded with `load_hf`, run through the Flax
encoder and compared with an independent NumPy forward pass (float64) and, when torch is installed,
with transformers' own PyTorch model loaded from the same folder.
"""

import json
import math

import jax
import numpy as np
import pytest
from safetensors import numpy as st_numpy
import tokenizers
from tokenizers import models, pre_tokenizers, processors
import transformers

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
# model_type -> (special tokens in id order, bos, eos, pad, unk, position offset, pooling, layers).
STYLES = {
    'xlm-roberta': (('<s>', '<pad>', '</s>', '<unk>'), '<s>', '</s>', '<pad>', '<unk>', 2,
                    'mean'),
    'bert': (('[PAD]', '[UNK]', '[CLS]', '[SEP]'), '[CLS]', '[SEP]', '[PAD]', '[UNK]', 0, 'cls'),
}


def make_tokenizer(style: str) -> tokenizers.Tokenizer:
  """A WordLevel tokenizer: specials first, then WORDS; '<bos> $A <eos>' post-processor."""
  specials, bos, eos, _, unk, _, _ = STYLES[style]
  vocab = {t: i for i, t in enumerate(specials + tuple(WORDS))}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=unk))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single=f'{bos} $A {eos}', special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
  tok.add_special_tokens(list(specials))
  return tok


def make_config(style: str) -> transformers.PretrainedConfig:
  """A tiny transformers config of the style (XLM-R: pad 1, 1 token type; BERT: pad 0, 2 types)."""
  specials, bos, eos, pad, _, _, _ = STYLES[style]
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


def write_checkpoint(folder, style: str, prefix: str = '', seed: int = 0):
  """Writes config.json, model.safetensors and tokenizer.json; returns the unprefixed state."""
  config = make_config(style)
  config.save_pretrained(folder)
  state = random_state(config, seed)
  stored = {prefix + k: v for k, v in state.items()}
  if prefix:  # a head checkpoint also holds tensors the encoder does not use
    stored[prefix + 'pooler.dense.weight'] = np.eye(HIDDEN, dtype=np.float32)
    stored[prefix + 'pooler.dense.bias'] = np.zeros(HIDDEN, np.float32)
    stored['lm_head.bias'] = np.zeros(VOCAB, np.float32)
  st_numpy.save_file(stored, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
  make_tokenizer(style).save(str(folder / 'tokenizer.json'))
  return state


def layer_norm(x, w, b, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def reference_forward(state, config, ids, mask, style: str) -> np.ndarray:
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
  if style == 'bert':
    pooled = x[:, 0]
  else:
    m = mask[..., None].astype(np.float64)
    pooled = (x * m).sum(1) / m.sum(1)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def flax_forward(arch, params, ids, mask, pooling: str) -> np.ndarray:
  module = encoder.Encoder(arch, pooling=pooling, dtype=np.float32)
  return np.asarray(jax.jit(module.apply)({'params': params}, ids, mask))


@pytest.fixture(scope='module', params=[('xlm-roberta', ''), ('xlm-roberta', 'roberta.'),
                                        ('bert', ''), ('bert', 'bert.')],
                ids=['xlmr', 'xlmr-prefixed', 'bert', 'bert-prefixed'])
def checkpoint(request, tmp_path_factory):
  """(style, folder, unprefixed state, config, loaded (arch, params, tokenizer), ids, mask)."""
  style, prefix = request.param
  folder = tmp_path_factory.mktemp(f"{style}{prefix.rstrip('.')}")
  state = write_checkpoint(folder, style, prefix)
  config = make_config(style)
  arch, params, tok = weights.load_hf(str(folder), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)
  seqs = tok.encode(TEXTS, 'query')
  ids, mask = tokenizer_lib.pad_batch(seqs, max(len(s) for s in seqs), tok.pad_id)
  return style, folder, state, config, (arch, params, tok), ids, mask


def test_arch_and_tokenizer(checkpoint):
  style, _, _, config, (arch, params, tok), ids, mask = checkpoint
  specials, bos, eos, pad, unk, offset, _ = STYLES[style]
  sid = {t: i for i, t in enumerate(specials)}
  assert arch == encoder.Arch(
      vocab_size=VOCAB, hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP,
      max_positions=MAX_POSITIONS, type_vocab_size=config.type_vocab_size,
      position_offset=offset, layer_norm_eps=config.layer_norm_eps, pad_id=sid[pad])
  assert params['layers']['query']['kernel'].shape == (LAYERS, HIDDEN, HIDDEN)
  assert params['layers']['mlp_in']['kernel'].shape == (LAYERS, HIDDEN, MLP)
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


def test_flax_matches_numpy_reference(checkpoint):
  style, _, state, config, (arch, params, _), ids, mask = checkpoint
  pooling = STYLES[style][6]
  ours = flax_forward(arch, params, ids, mask, pooling)
  ref = reference_forward(state, config, ids, mask, style)
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
  # Not trivially equal: the texts get distinct embeddings.
  assert np.max(np.abs(ours[0] - ours[1])) > 0.1


def test_flax_matches_transformers_torch(checkpoint):
  torch = pytest.importorskip('torch')
  style, folder, _, _, (arch, params, _), ids, mask = checkpoint
  cls = transformers.BertModel if style == 'bert' else transformers.XLMRobertaModel
  model = cls.from_pretrained(str(folder)).eval()
  with torch.inference_mode():
    hidden = model(input_ids=torch.from_numpy(ids).long(),
                   attention_mask=torch.from_numpy(mask).long()).last_hidden_state.double()
  if STYLES[style][6] == 'cls':
    pooled = hidden[:, 0]
  else:
    m = torch.from_numpy(mask)[..., None].double()
    pooled = (hidden * m).sum(1) / m.sum(1)
  theirs = torch.nn.functional.normalize(pooled, dim=-1).numpy()
  ours = flax_forward(arch, params, ids, mask, STYLES[style][6])
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize('missing', ['config.json', 'model.safetensors', 'tokenizer.json'])
def test_missing_file_is_named(tmp_path, missing):
  write_checkpoint(tmp_path, 'xlm-roberta')
  (tmp_path / missing).unlink()
  with pytest.raises(FileNotFoundError, match=rf'{missing} is missing'):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)


def test_unknown_checkpoint_offline_says_how_to_use_a_folder(tmp_path, monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
  name = 'hbt-test-org/no-such-checkpoint'
  with pytest.raises(FileNotFoundError) as info:
    weights.load_hf(name, QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)
  message = str(info.value)
  assert name in message
  assert 'is not a local folder' in message
  assert 'point it at a folder with config.json, model.safetensors and tokenizer.json' in message


@pytest.mark.parametrize('change, error', [
    ({'model_type': 'gpt2'}, "unsupported model_type 'gpt2'"),
    ({'model_type': 'deberta-v2'}, "unsupported model_type 'deberta-v2'"),
    ({'hidden_act': 'relu'}, "unsupported hidden_act 'relu'"),
], ids=['gpt2', 'deberta-v2', 'relu'])
def test_unsupported_config_is_rejected(tmp_path, change, error):
  write_checkpoint(tmp_path, 'xlm-roberta')
  config = json.loads((tmp_path / 'config.json').read_text())
  config.update(change)
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(ValueError, match=error):
    weights.load_hf(str(tmp_path), QUERY_PREFIX, PASSAGE_PREFIX, MAX_LENGTH)
  with pytest.raises(ValueError, match=error):
    weights.hf_arch(config)
