"""Evaluators run during training, each with its own cadence, as big_vision's evaluators are.

`config.evals` names them: `{name: {'type': one of REGISTRY, 'every': N, ...type's fields}}`. The
training loop runs each at step 0, every N steps (0: never in between) and at the last step;
`--config.mode=eval` runs the benchmark ones once. Each run returns scalars, which the loop writes
as '<name>/<key>' to TensorBoard and to workdir/metrics.jsonl (e.g. 'zero_shot/mono/ap',
'val/loss'). The xquad_r, mlqa_r and val_map evaluators also write their full results as soon as
they exist (eval_run.write_report): workdir/eval/<stem>_<tag>.json and <stem>_<tag>_per_query.npz,
where stem is the benchmark ('xquad_r', 'mlqa_r'; the evaluator's name for val_map) and tag is
'before' at step 0, 'after' at the last step, 'step<N>' in between, and none in eval mode
(eval/xquad_r.json); a PNG heatmap beside the before, after and eval-mode files, and TREC run
files (eval/trec/<stem>_after/, eval/trec/<stem>/) for the benchmarks' final figures.

Types (REGISTRY) and their fields besides 'type' and 'every':
  xquad_r, mlqa_r  zero-shot benchmark (hbt.eval.run.evaluate_model); 'langs': comma-separated
                   languages, '' for all.
  beir:<folder>    a BEIR-layout folder, split config.eval.beir_split (eval mode only).
  val_loss         validation InfoNCE loss and in-batch accuracy on fixed mixed-language batches
                   of the held-out ids; 'batches': how many batches of config.train.batch_size.
  val_map          retrieval among the held-out ids: their queries against their positives, every
                   language, scored like a benchmark (mono, cross, multi); 'max_ids': at most that
                   many held-out ids (0: all).
"""

import dataclasses
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from hbt import io
from hbt import sharding
from hbt.batches import sampler as sampler_lib
from hbt.batches import shards
from hbt.data import pairs as pairs_lib
from hbt.data import sources
from hbt.data import squad_r
from hbt.data import types
from hbt.eval import beir
from hbt.eval import run as eval_run
from hbt.train import step as step_lib

SIDE_ARRAYS = ('_tokens', '_mask', '_group')  # arrays of each text side of a batch
ARRAY_SUFFIXES = SIDE_ARRAYS + ('_lang',)  # batch arrays the step gets (language ids too)


@dataclasses.dataclass
class Context:
  """What the evaluators of one run share.

  Attributes:
    config: the experiment config.
    workdir: the run's folder (local or remote).
    model: the encoder module, pretrained params and tokenizer (hbt.model.build.Model).
    mesh: the device mesh.
    encode_fn: eval_run.make_encode_fn(model.module, mesh), one jit for every evaluator.
    val_pairs: the held-out pairs (None or empty: the val_* evaluators are skipped).
    shardings: the TrainState shardings (for the validation loss step); None in eval mode.
    last_step: the run's last step (config.train.steps).
  """

  config: ml_collections.ConfigDict
  workdir: epath.Path
  model: Any
  mesh: Any
  encode_fn: Any
  val_pairs: pairs_lib.PairSet | None = None
  shardings: Any = None
  last_step: int = 0


def tag_of(step: int | None, last_step: int) -> str:
  """The file tag of an evaluation at `step`: 'before', 'after', 'step<N>', or '' (eval mode)."""
  if step is None:
    return ''
  if step == 0:
    return 'before'
  return 'after' if step == last_step else f'step{step}'


class Evaluator:
  """A named evaluation with its cadence; `run(step, state)` returns its scalars."""

  is_benchmark = False  # a zero-shot benchmark: its first and last step make the main tables

  def __init__(self, name: str, every: int, ctx: Context):
    self.name, self.every, self.ctx = name, every, ctx

  def run(self, step: int | None, state: step_lib.TrainState) -> dict[str, float]:
    raise NotImplementedError


class BenchmarkEvaluator(Evaluator):
  """Encodes and scores a parallel benchmark; writes eval/<name>_<tag>.json (+ .png)."""

  is_benchmark = True

  def __init__(self, name: str, every: int, ctx: Context, benchmark: types.Benchmark,
               heatmaps: bool = True):
    super().__init__(name, every, ctx)
    self.benchmark = benchmark
    self.heatmaps = heatmaps
    self.results = {}  # step -> full results (with per-query arrays), for the before/after tables

  def run(self, step, state):
    ctx = self.ctx
    tag = tag_of(step, ctx.last_step)
    # TREC run files of the final figures only: eval mode and the last step.
    final = step is None or step == ctx.last_step
    results = eval_run.evaluate_model(ctx.config, ctx.encode_fn, step_lib.merge_params(state),
                                      ctx.model.tokenizer, ctx.mesh, self.benchmark,
                                      trec_depth=None if final and self.is_benchmark else 0)
    results.update(evaluator=self.name, step=step)
    self.results[step] = results
    if jax.process_index() == 0:
      eval_run.write_report(ctx.workdir, results, tag,
                            heatmap=self.heatmaps and not tag.startswith('step'))
    return flat_summary(results['summary'])

  def path(self, step: int | None, suffix: str = '.json') -> epath.Path:
    """workdir/eval/<benchmark>[_<tag>]<suffix>, a results file of the evaluation at `step`."""
    tag = tag_of(step, self.ctx.last_step)
    name = self.benchmark.name + (f'_{tag}' if tag else '')
    return io.path(self.ctx.workdir) / 'eval' / f'{name}{suffix}'


def flat_summary(summary: dict, prefix: str = '') -> dict[str, float]:
  """{'mono/ap': .8, 'cross/recall@1': ...} from a summary (a BEIR one: {'ndcg@10': ...})."""
  out = {}
  for key, value in summary.items():
    if isinstance(value, dict):
      out.update(flat_summary(value, f'{prefix}{key}/'))
    elif isinstance(value, (int, float)):
      out[f'{prefix}{key}'] = float(value)
  return out


def _benchmark(benchmark_name: str):
  def make(name, cfg, ctx):
    data = squad_r.load_benchmark(benchmark_name, ctx.config.data.dir or None,
                                  cfg.get('langs') or None)
    return BenchmarkEvaluator(name, cfg.every, ctx, data)
  return make


def _beir(name, cfg, ctx):
  data = beir.load(beir.folder_of(cfg.type), ctx.config.eval.beir_split)
  return BenchmarkEvaluator(name, cfg.every, ctx, data, heatmaps=False)


def benchmark_from_pairs(pairs: pairs_lib.PairSet, name: str, max_ids: int = 0,
                         seed: int = 0) -> types.Benchmark:
  """The held-out pairs as a parallel benchmark: each id's query against every positive.

  Each language's candidates are its distinct positive texts; an id's answer is its own positive.
  With max_ids > 0, a fixed random subset of that many ids (the same for every step).
  """
  ids = pairs.all_ids()
  if 0 < max_ids < len(ids):
    ids = sorted(str(i) for i in np.random.default_rng(seed).choice(ids, max_ids, replace=False))
  keep = set(ids)
  splits = {}
  for lang in pairs.langs:
    qids = [i for i in pairs.ids[lang] if i in keep]
    if not qids:
      continue
    candidates, answer = {}, []
    for qid in qids:
      answer.append(candidates.setdefault(pairs.positive(lang, qid), len(candidates)))
    splits[lang] = types.LanguageSplit(
        lang=lang, query_ids=tuple(qids), queries=tuple(pairs.query(lang, q) for q in qids),
        candidates=tuple(candidates), contexts=np.zeros(len(candidates), np.int32),
        paragraphs=('',), answer=np.asarray(answer, np.int32))
  return types.Benchmark(name=name, langs=tuple(splits), splits=splits)


class HeldOutEvaluator(BenchmarkEvaluator):
  """Retrieval among the held-out training ids (benchmark_from_pairs); no heatmaps."""

  is_benchmark = False

  def __init__(self, name, every, ctx, benchmark):
    super().__init__(name, every, ctx, benchmark, heatmaps=False)


def _val_map(name, cfg, ctx):
  if ctx.val_pairs is None or len(ctx.val_pairs) == 0:
    logging.warning('evaluator %s skipped: no held-out ids (config.data.val_fraction)', name)
    return None
  data = benchmark_from_pairs(ctx.val_pairs, name, cfg.max_ids, ctx.config.seed)
  return HeldOutEvaluator(name, cfg.every, ctx, data)


class ValLossEvaluator(Evaluator):
  """Mean InfoNCE loss and in-batch accuracy over fixed validation batches."""

  def __init__(self, name, every, ctx, batches):
    super().__init__(name, every, ctx)
    self.batches = batches
    self.eval_fn = step_lib.jit_eval_step(ctx.model.module, ctx.shardings, ctx.mesh,
                                          ctx.config.train, ctx.config.mesh.rules)

  def run(self, step, state):
    results = [jax.device_get(self.eval_fn(state, global_batch(b, self.ctx.mesh)))
               for b in self.batches]
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


def validation_batches(config, val_pairs: pairs_lib.PairSet, tokenizer, mesh,
                       num_batches: int) -> list[dict]:
  """This process's rows of fixed validation batches: mixed-language (x_x) pairs of held-out ids.

  Every process draws the same global batches and keeps its own contiguous rows, as the training
  input pipeline does, so the global batch holds each pair once whatever the process count.
  """
  t = config.train
  if len(val_pairs) == 0:
    return []
  rows_multiple = np.lcm(sharding.data_parallel_size(mesh), jax.process_count())
  size = min(t.batch_size, len(val_pairs.all_ids()))
  size -= size % rows_multiple
  if size < 2:
    return []
  sampler = sampler_lib.Sampler(val_pairs, size, 'x_x', seed=config.seed + 1)
  rows = size // jax.process_count()
  start = jax.process_index() * rows
  out = []
  for s in range(num_batches):
    sides = shards.encode_batch(sampler.batch(s), val_pairs, tokenizer, t.max_query_length,
                                t.max_passage_length, t.hard_negatives)
    out.append({f'{name}{suffix}': getattr(side, suffix[1:])[start:start + rows]
                for name, side in sides.items() for suffix in SIDE_ARRAYS})
  return out


def global_batch(batch: dict, mesh) -> dict:
  """This process's rows of a global batch -> global jax arrays split over 'data'."""
  spec = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(spec, v) for k, v in batch.items()
          if k.endswith(ARRAY_SUFFIXES)}


def _val_loss(name, cfg, ctx):
  if ctx.val_pairs is None or ctx.shardings is None:
    return None
  batches = validation_batches(ctx.config, ctx.val_pairs, ctx.model.tokenizer, ctx.mesh,
                               cfg.batches)
  if not batches:
    logging.warning('evaluator %s skipped: too few held-out ids for a validation batch', name)
    return None
  return ValLossEvaluator(name, cfg.every, ctx, batches)


# type -> (factory(name, cfg, ctx) -> Evaluator or None, {extra field: default}).
REGISTRY = {
    **{b: (_benchmark(b), {'langs': ''}) for b in sources.SOURCES},
    'val_loss': (_val_loss, {'batches': 4}),
    'val_map': (_val_map, {'max_ids': 0}),
    'beir': (_beir, {'langs': ''}),
}


def kind(type_name: str) -> str:
  """The REGISTRY key of an evaluator type: 'beir' for 'beir:<folder>', else the type itself."""
  return 'beir' if beir.folder_of(type_name) is not None else type_name


def from_config(config, ctx: Context, benchmarks_only: bool = False,
                validation_only: bool = False) -> list[Evaluator]:
  """The evaluators of config.evals, in config order (those that do not apply are skipped)."""
  out = []
  for name, cfg in config.evals.items():
    is_benchmark = kind(cfg.type) in tuple(sources.SOURCES) + ('beir',)
    if (benchmarks_only and not is_benchmark) or (validation_only and is_benchmark):
      continue
    evaluator = REGISTRY[kind(cfg.type)][0](name, cfg, ctx)
    if evaluator is not None:
      out.append(evaluator)
  return out
