"""The batch sampler of hybrid batch training: which (id, query language, positive language) pairs
make up the batch of each step.

A batch is one of three kinds:
  * 'mono': every pair has query and positive in one language, the same for the whole batch.
  * 'cross': every pair has query and positive in two different languages that both have its id;
    the language pairs vary within the batch.
  * 'mixed': every pair has query and positive in one language, but languages vary within the batch.

Strategies:
  * 'hybrid': with probability alpha a 'mono' batch, otherwise a 'cross' batch.
  * 'x_x_mono': every batch 'mono'.
  * 'x_y': every batch 'cross'.
  * 'x_x': every batch 'mixed'.
  * 'en_en': every batch 'mono' in English.

No two pairs of a batch share a parallel id (a shared id would make a translation of the positive an
in-batch false negative). Distinct ids can still share an answer sentence: the loss masks those
(positive groups, see hbt.data.pairs). The texts come from the PairSet: query(q_lang, id), positive(p_lang, id)
(and, if used, negatives(p_lang, id)); `batch_texts` looks them up.
"""

from collections.abc import Iterable
import collections
import dataclasses
import math

import numpy as np

from hbt.data.pairs import PairSet

STRATEGIES = ('hybrid', 'x_x_mono', 'x_y', 'x_x', 'en_en')
LANG_SAMPLINGS = ('uniform', 'size', 'temperature')
PAIR_SAMPLINGS = ('pair_first', 'id_first')
KINDS = ('mono', 'cross', 'mixed')
ENGLISH = 'en'


@dataclasses.dataclass(frozen=True)
class Batch:
  """The pairs of one training step.

  Attributes:
    step: the step it was drawn for.
    kind: 'mono', 'cross' or 'mixed' (see the module docstring).
    ids: the parallel ids, pairwise distinct, one per pair.
    query_langs: the language of each pair's query.
    positive_langs: the language of each pair's positive.
  """

  step: int
  kind: str
  ids: tuple[str, ...]
  query_langs: tuple[str, ...]
  positive_langs: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.ids)


def _kinds_of(strategy: str, alpha: float) -> tuple[str, ...]:
  """The batch kinds `strategy` can draw (hybrid: those with non-zero probability)."""
  if strategy == 'hybrid':
    return tuple(k for k, p in (('mono', alpha), ('cross', 1.0 - alpha)) if p > 0)
  return {'x_x_mono': ('mono',), 'x_y': ('cross',), 'x_x': ('mixed',), 'en_en': ('mono',)}[strategy]


def _lang_weights(sizes: np.ndarray, lang_sampling: str, temperature: float) -> np.ndarray:
  """Unnormalised language weights: 1, size, or size**temperature."""
  if lang_sampling == 'uniform':
    return np.ones_like(sizes, dtype=np.float64)
  if lang_sampling == 'size':
    return sizes.astype(np.float64)
  return sizes.astype(np.float64)**temperature


def _pick(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """For each row of `weights` (non-negative, each row with a positive entry), a column index
  drawn with probability proportional to the row's weights."""
  cum = np.cumsum(weights, axis=1)
  u = rng.random(len(weights)) * cum[:, -1]
  picked = np.count_nonzero(cum <= u[:, None], axis=1)
  last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
  return np.minimum(picked, last)  # Guards against float round-off at the top end.


def _check_args(batch_size, strategy, alpha, lang_sampling, temperature, seed,
                pair_sampling) -> None:
  """ValueErrors naming the argument, for arguments bad regardless of the data."""
  if strategy not in STRATEGIES:
    raise ValueError(f'strategy must be one of {STRATEGIES}, got {strategy!r}')
  if pair_sampling not in PAIR_SAMPLINGS:
    raise ValueError(f'pair_sampling must be one of {PAIR_SAMPLINGS}, got {pair_sampling!r}')
  if lang_sampling not in LANG_SAMPLINGS:
    raise ValueError(f'lang_sampling must be one of {LANG_SAMPLINGS}, got {lang_sampling!r}')
  if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
      or batch_size < 1):
    raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
  if (isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating))
      or not 0.0 <= alpha <= 1.0):
    raise ValueError(f'alpha must be a number in [0, 1], got {alpha!r}')
  if (isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating))
      or not math.isfinite(temperature) or temperature < 0):
    raise ValueError(f'temperature must be a finite number >= 0, got {temperature!r}')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')


class Sampler:
  """Draws the batch of every step, as a pure function of (seed, step).

  `batch(step)` seeds a fresh numpy generator with [seed, step], so a run restarted at step k (a new
  Sampler with the same PairSet and arguments) gets the same batches as an uninterrupted one, and
  steps may be drawn in any order or in parallel.

  How a batch is drawn, by kind:
    * 'mono': one language L is drawn with the language weights (below) over the languages that may
      be chosen (all of the PairSet's, or just 'en' for en_en); then batch_size ids are drawn
      uniformly without replacement from L's ids; every pair is (L, L).
    * 'cross' and 'mixed' with pair_sampling 'pair_first' (the default): each pair's (query
      language, positive language) is drawn first, then an id that both languages have, uniformly
      among those not yet in the batch. 'cross' draws from the ordered pairs of two different
      languages that share an id, with weight w(q) * w(p); 'mixed' draws (L, L) with weight w(L).
      With 'uniform' language weights the language pairs are thus uniform over the ordered pairs,
      whatever the id coverage, so every strategy sees the same language mix. (If the ids of a
      drawn pair run out within a batch, its remaining rows draw again among the pairs left.)
    * 'cross' and 'mixed' with pair_sampling 'id_first' (hbt's first sampler): batch_size ids are
      drawn uniformly without replacement (for 'cross', from the ids present in at least two
      languages); for each, the query language is drawn with the language weights restricted to
      the languages that have the id, then ('cross') the positive language likewise from the rest.
      The language mix then follows the id coverage: in MLQA-R, where every id has English plus
      1 to 3 others, English is on one side of most cross pairs.
    * 'cross' with lang_clusters ({lang: cluster name}, pair_first only): a pair is drawn from the
      ordered pairs of two languages of one cluster with probability cluster_p_in, otherwise from
      the pairs across clusters; within each category with weight w(q) * w(p) as above (uniform
      over the category's ordered pairs under 'uniform'). A one-language cluster has no within
      pair: its languages are drawn only across. Drawing fails at start (ValueError naming
      lang_clusters) when a category with non-zero probability has no pair that shares an id, or
      when a language of the pairs is in no cluster. (If a pair's ids run out within a batch, its
      rows draw again among all pairs left, so the category shares hold up to that rare event.)
  Language weights, by lang_sampling: 'uniform' 1; 'size' the language's number of ids;
  'temperature' that number ** temperature (0 is uniform, 1 is size).

  Epochs: steps_per_epoch = max(1, num_ids // batch_size), num_ids being the number of distinct
  ids the strategy can draw (en_en: English ids; x_y and hybrid with alpha 0: ids in >= 2
  languages; otherwise all ids). Batches are drawn independently per step: ids are without
  replacement within a batch but with replacement across batches, so an epoch sees each id about
  once in expectation (exactly so in expectation when every language has every id, as in
  XQuAD-R; with uneven coverage, ids of often-drawn languages come more often), not each id
  exactly once.
  """

  def __init__(self, pairs: PairSet, batch_size: int, strategy: str = 'hybrid',
               alpha: float = 0.5, lang_sampling: str = 'uniform', temperature: float = 0.3,
               seed: int = 0, pair_sampling: str = 'pair_first',
               lang_clusters: dict[str, str] | None = None, cluster_p_in: float = 0.8):
    """Precomputes per-language id index arrays and checks that every batch can be drawn.

    Args:
      pairs: the training pairs.
      batch_size: pairs per batch.
      strategy: one of STRATEGIES.
      alpha: hybrid only: the probability of a monolingual batch, in [0, 1].
      lang_sampling: one of LANG_SAMPLINGS.
      temperature: the exponent of 'temperature' sampling, finite and >= 0.
      seed: a non-negative integer.
      pair_sampling: one of PAIR_SAMPLINGS: how 'cross' and 'mixed' batches pick languages.
      lang_clusters: {lang: cluster name} (hbt.batches.clusters), or None / {} for none: 'cross'
        batches then draw within a cluster with probability cluster_p_in.
      cluster_p_in: the probability, in [0, 1], of a within-cluster pair (with lang_clusters).

    Raises:
      ValueError: naming the argument, for a bad strategy, alpha, lang_sampling, temperature,
        batch_size or seed; naming the language and the counts, when a language that can be chosen
        for a 'mono' batch has fewer ids than batch_size (or when too few ids exist for a 'cross'
        or 'mixed' batch).
    """
    _check_args(batch_size, strategy, alpha, lang_sampling, temperature, seed, pair_sampling)
    self.pairs = pairs
    self.batch_size = int(batch_size)
    self.strategy = strategy
    self.alpha = float(alpha)
    self.lang_sampling = lang_sampling
    self.temperature = float(temperature)
    self.seed = int(seed)
    self.pair_sampling = pair_sampling
    self.kinds = _kinds_of(strategy, self.alpha)
    self.lang_clusters = dict(lang_clusters or {})
    self.cluster_p_in = cluster_p_in

    if not len(pairs):
      raise ValueError('pairs is empty')
    langs = tuple(sorted(pairs.langs))  # Sorted, so batches do not depend on source order.
    ids = pairs.all_ids()
    position = {qid: i for i, qid in enumerate(ids)}
    self.langs = langs
    self._langs = np.array(langs, dtype=object)
    self._ids = np.array(ids, dtype=object)
    self._lang_index = [np.array(sorted(position[q] for q in pairs.ids[lang]), dtype=np.int64)
                        for lang in langs]
    self._member = np.zeros((len(ids), len(langs)), dtype=bool)
    for j, index in enumerate(self._lang_index):
      self._member[index, j] = True
    self._cross_index = np.flatnonzero(self._member.sum(axis=1) >= 2)
    sizes = np.array([len(index) for index in self._lang_index], dtype=np.int64)
    self._weights = _lang_weights(sizes, lang_sampling, self.temperature)

    mono = [ENGLISH] if strategy == 'en_en' else list(langs)
    self._mono = np.array([langs.index(lang) for lang in mono if lang in langs], dtype=np.int64)
    mono_weights = self._weights[self._mono]
    self._mono_probs = mono_weights / mono_weights.sum() if len(self._mono) else mono_weights
    # pair_first: the (query, positive) language pairs of 'cross' and 'mixed' batches, each with
    # its drawing probability and the ids both languages have.
    self._pairs = {}
    for kind, same in (('cross', False), ('mixed', True)):
      pairs_ = [(a, b) for a in range(len(langs)) for b in range(len(langs))
                if (a == b) == same and (self._member[:, a] & self._member[:, b]).any()]
      weights = np.array([self._weights[a] * (1.0 if same else self._weights[b])
                          for a, b in pairs_])
      shared = [np.flatnonzero(self._member[:, a] & self._member[:, b]) for a, b in pairs_]
      counts = np.array([len(x) for x in shared], np.int64)
      table = np.zeros((len(shared), max(counts, default=0)), np.int64)  # pair -> its ids
      for row, ids_ in zip(table, shared):
        row[:len(ids_)] = ids_
      probs = weights / weights.sum()
      if kind == 'cross' and lang_clusters:
        probs = self._cluster_probs(pairs_, weights, lang_clusters, cluster_p_in)
      self._pairs[kind] = (np.array(pairs_, np.int64).reshape(-1, 2), probs, table, counts)
    self._check_sizes(mono)

  def _cluster_probs(self, pairs_: list[tuple[int, int]], weights: np.ndarray,
                     lang_clusters: dict[str, str], p_in: float) -> np.ndarray:
    """The 'cross' pair probabilities with clusters: p_in within, 1 - p_in across."""
    if self.pair_sampling != 'pair_first':
      raise ValueError(f"lang_clusters needs pair_sampling 'pair_first', got "
                       f'{self.pair_sampling!r}')
    if (isinstance(p_in, bool) or not isinstance(p_in, (int, float, np.floating))
        or not 0.0 <= p_in <= 1.0):
      raise ValueError(f'cluster_p_in must be a number in [0, 1], got {p_in!r}')
    missing = [lang for lang in self.langs if lang not in lang_clusters]
    if missing:
      raise ValueError(f'lang_clusters has no cluster for languages {missing} of the pairs '
                       f'(clusters: {lang_clusters})')
    cluster = [lang_clusters[lang] for lang in self.langs]
    within = np.array([cluster[a] == cluster[b] for a, b in pairs_], bool).reshape(-1)
    probs = np.zeros(len(pairs_))
    for mask, share, name in ((within, p_in, 'within'), (~within, 1.0 - p_in, 'across')):
      if share > 0 and not mask.any():
        raise ValueError(f'lang_clusters: no two languages {name} clusters share an id, so '
                         f'cluster_p_in={p_in} cannot be met (clusters: {lang_clusters}; '
                         f'languages: {list(self.langs)})')
      if share > 0:
        probs[mask] = share * weights[mask] / weights[mask].sum()
    return probs

  def _check_sizes(self, mono_langs: list[str]) -> None:
    """ValueErrors naming the language and counts when a drawable batch cannot be filled."""
    b = self.batch_size
    counts = {lang: len(index) for lang, index in zip(self.langs, self._lang_index)}
    if 'mono' in self.kinds:
      for lang in mono_langs:
        if lang not in counts:
          raise ValueError(f'strategy {self.strategy!r} needs language {lang!r}, which the pairs '
                           f'lack (languages: {list(self.langs)})')
        if counts[lang] < b:
          raise ValueError(f'batch_size {b} is larger than the {counts[lang]} ids of language '
                           f'{lang!r}, which a monolingual batch can use; ids per language: '
                           f'{counts}')
    if 'cross' in self.kinds and len(self._cross_index) < b:
      raise ValueError(f'batch_size {b} is larger than the {len(self._cross_index)} ids present in '
                       f'at least two languages, which a cross-lingual batch needs; ids per '
                       f'language: {counts}')
    if 'mixed' in self.kinds and len(self._ids) < b:
      raise ValueError(f'batch_size {b} is larger than the {len(self._ids)} distinct ids; ids per '
                       f'language: {counts}')

  @property
  def num_ids(self) -> int:
    """The number of distinct ids this strategy can draw (see the class docstring)."""
    if self.strategy == 'en_en':
      return len(self._lang_index[self.langs.index(ENGLISH)])
    if self.kinds == ('cross',):
      return len(self._cross_index)
    return len(self._ids)

  @property
  def steps_per_epoch(self) -> int:
    """max(1, num_ids // batch_size)."""
    return max(1, self.num_ids // self.batch_size)

  def batch(self, step: int) -> Batch:
    """The batch of `step`: a pure function of (seed, step) given the constructor's arguments.

    Args:
      step: a non-negative integer.

    Returns:
      The Batch.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f'step must be a non-negative integer, got {step!r}')
    rng = np.random.default_rng([self.seed, int(step)])
    if self.strategy == 'hybrid':
      kind = 'mono' if rng.random() < self.alpha else 'cross'
    else:
      kind = self.kinds[0]
    b = self.batch_size
    if kind == 'mono':
      lang = self._mono[0] if len(self._mono) == 1 else rng.choice(self._mono, p=self._mono_probs)
      index = self._lang_index[lang]
      idx = index[rng.choice(len(index), size=b, replace=False)]
      q = p = np.full(b, lang)
    elif self.pair_sampling == 'pair_first':
      idx, q, p = self._draw_pairs_first(kind, rng)
    elif kind == 'cross':
      idx = self._cross_index[rng.choice(len(self._cross_index), size=b, replace=False)]
      weights = self._member[idx] * self._weights
      q = _pick(weights, rng)
      weights[np.arange(b), q] = 0.0
      p = _pick(weights, rng)
    else:
      idx = rng.choice(len(self._ids), size=b, replace=False)
      q = p = _pick(self._member[idx] * self._weights, rng)
    return Batch(step=int(step), kind=kind, ids=tuple(self._ids[idx]),
                 query_langs=tuple(self._langs[q]), positive_langs=tuple(self._langs[p]))

  def _draw_pairs_first(self, kind: str, rng: np.random.Generator):
    """(ids, query langs, positive langs) of a 'cross' or 'mixed' batch, language pair first.

    Every row draws a pair, then an id among the pair's; a row whose id is already in the batch
    draws again (so its id is uniform over the pair's ids not yet used), and a row whose pair has
    no id left draws another pair.
    """
    pairs, probs, shared, counts = self._pairs[kind]
    b = self.batch_size
    idx, pair_of = np.full(b, -1, np.int64), np.full(b, -1, np.int64)
    used = np.zeros(len(self._ids), bool)
    alive = np.ones(len(pairs), bool)
    todo = np.arange(b)
    while len(todo):
      fresh = todo[pair_of[todo] < 0]
      if len(fresh):
        live = probs * alive
        pair_of[fresh] = rng.choice(len(pairs), size=len(fresh), p=live / live.sum())
      pair = pair_of[todo]
      cand = shared[pair, (rng.random(len(todo)) * counts[pair]).astype(np.int64)]
      _, first = np.unique(cand, return_index=True)
      ok = np.zeros(len(todo), bool)
      ok[first] = ~used[cand[first]]
      idx[todo[ok]], used[cand[ok]] = cand[ok], True
      todo = todo[~ok]
      for p in np.unique(pair_of[todo]):  # pairs with no id left: their rows draw another pair
        if used[shared[p, :counts[p]]].all():
          alive[p] = False
          pair_of[todo[pair_of[todo] == p]] = -1
    return idx, pairs[pair_of, 0], pairs[pair_of, 1]

  def __call__(self, step: int) -> Batch:
    """Same as batch(step)."""
    return self.batch(step)


def batch_texts(pairs: PairSet, batch: Batch) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """The (queries, positives) texts of `batch`, aligned with batch.ids."""
  queries = tuple(pairs.query(lang, qid) for lang, qid in zip(batch.query_langs, batch.ids))
  positives = tuple(pairs.positive(lang, qid) for lang, qid in zip(batch.positive_langs, batch.ids))
  return queries, positives


def _sorted_counts(counter: collections.Counter) -> dict[str, int]:
  """A Counter as a plain dict with sorted keys."""
  return {k: counter[k] for k in sorted(counter)}


def describe(batches: Iterable[Batch]) -> dict:
  """Counts for a manifest: batches per kind, pairs per language and per language pair.

  Args:
    batches: e.g. [sampler.batch(s) for s in range(num_steps)].

  Returns:
    A JSON-serialisable dict: 'num_batches', 'num_pairs', 'kinds' (batches per kind),
    'mono_batch_langs' (mono batches per language), 'query_langs' and 'positive_langs' (pairs per
    language on each side), 'lang_pairs' (pairs per 'query_lang-positive_lang'); keys sorted.
  """
  kinds, mono, query, positive, lang_pairs = (collections.Counter() for _ in range(5))
  num_batches = num_pairs = 0
  for batch in batches:
    num_batches += 1
    num_pairs += len(batch.ids)
    kinds[batch.kind] += 1
    if batch.kind == 'mono' and batch.query_langs:
      mono[batch.query_langs[0]] += 1
    query.update(batch.query_langs)
    positive.update(batch.positive_langs)
    lang_pairs.update(f'{q}-{p}' for q, p in zip(batch.query_langs, batch.positive_langs))
  return {
      'num_batches': num_batches,
      'num_pairs': num_pairs,
      'kinds': _sorted_counts(kinds),
      'mono_batch_langs': _sorted_counts(mono),
      'query_langs': _sorted_counts(query),
      'positive_langs': _sorted_counts(positive),
      'lang_pairs': _sorted_counts(lang_pairs),
  }
