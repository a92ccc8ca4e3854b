"""The default experiment with a named hub encoder: its hub id, pooling, prefixes and architecture.

  python -m hbt.main --config=configs/models.py:xlmr_xl --workdir=DIR [--config.x=y]

config.model.checkpoint is the Hugging Face id (config.model.source='hf' downloads the weights once,
see README). config.model.arch is the architecture of that checkpoint, as its config.json gives it,
so that `--config.mode=dry_run` compiles the train step for it without any weights or internet.
XLM-R XL and XXL are pre-LayerNorm transformers (an `xlm-roberta-xl` model type); hbt's encoder is
post-LN, which has the same parameters and matmuls (one final LayerNorm fewer), so their dry-run
figures hold, but their weights do not load into hbt.
"""

import ml_collections

from configs import default


def _arch(vocab, hidden, layers, heads, mlp, bert=False):
  """An Arch dict: XLM-R family (positions after padding_idx 1) or BERT family (bert=True)."""
  return dict(vocab_size=vocab, hidden=hidden, layers=layers, heads=heads, mlp=mlp,
              max_positions=512 if bert else 514, type_vocab_size=2 if bert else 1,
              position_offset=0 if bert else 2, layer_norm_eps=1e-12 if bert else 1e-5,
              pad_id=0 if bert else 1)


_E5 = ('query: ', 'passage: ')
# name: (hub id, pooling, (query prefix, passage prefix), architecture from the hub config.json).
MODELS = {
    'xlmr_base': ('FacebookAI/xlm-roberta-base', 'mean', ('', ''),
                  _arch(250002, 768, 12, 12, 3072)),
    'xlmr_large': ('FacebookAI/xlm-roberta-large', 'mean', ('', ''),
                   _arch(250002, 1024, 24, 16, 4096)),
    'xlmr_xl': ('facebook/xlm-roberta-xl', 'mean', ('', ''), _arch(250880, 2560, 36, 32, 10240)),
    'xlmr_xxl': ('facebook/xlm-roberta-xxl', 'mean', ('', ''),
                 _arch(250880, 4096, 48, 32, 16384)),
    'labse': ('sentence-transformers/LaBSE', 'cls_pooler', ('', ''),
              _arch(501153, 768, 12, 12, 3072, bert=True)),
    'mbert': ('google-bert/bert-base-multilingual-cased', 'cls', ('', ''),
              _arch(119547, 768, 12, 12, 3072, bert=True)),
    # multilingual-e5-small: a BERT-style MiniLM with XLM-R's vocabulary and positions.
    'me5_small': ('intfloat/multilingual-e5-small', 'mean', _E5,
                  {**_arch(250037, 384, 12, 12, 1536), 'type_vocab_size': 2,
                   'layer_norm_eps': 1e-12}),
    'me5_base': ('intfloat/multilingual-e5-base', 'mean', _E5, _arch(250002, 768, 12, 12, 3072)),
    'me5_large': ('intfloat/multilingual-e5-large', 'mean', _E5,
                  _arch(250002, 1024, 24, 16, 4096)),
}


def get_config(name: str = 'xlmr_base'):
  """The default config with model `name` (a key of MODELS)."""
  if name not in MODELS:
    raise ValueError(f'configs/models.py:{name}: unknown model; one of {", ".join(MODELS)}')
  checkpoint, pooling, (query_prefix, passage_prefix), arch = MODELS[name]
  config = default.get_config()
  config.model.source = 'hf'
  config.model.checkpoint = checkpoint
  config.model.pooling = pooling
  config.model.query_prefix = query_prefix
  config.model.passage_prefix = passage_prefix
  config.model.arch = ml_collections.ConfigDict(arch)
  return config
