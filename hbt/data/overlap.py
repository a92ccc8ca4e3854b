"""Sentences shared by the training pairs and an evaluation benchmark (a zero-shot check).

The default job trains on MLQA-R and evaluates on XQuAD-R: both come from Wikipedia, so the same
sentence could be a training positive and an evaluation candidate. `sentence_overlap` counts the
exact sentences (after stripping surrounding whitespace) that the training pairs (queries and
positives) share with the evaluation pool (queries and candidates), language by language.
"""

from hbt.data.pairs import PairSet
from hbt.data.types import Benchmark


def sentence_overlap(train: PairSet, benchmark: Benchmark) -> dict:
  """Per language of `benchmark`, and in total, the exact sentences shared with `train`.

  Args:
    train: the training pairs.
    benchmark: the evaluation benchmark.

  Returns:
    {'langs': {lang: counts}, 'total': counts}, counts being 'train' (distinct training
    sentences), 'eval' (distinct evaluation sentences), 'shared' (in both), 'shared_queries' and
    'shared_candidates' (evaluation queries / candidates that are training sentences). A language
    the training pairs lack has 'train' 0.
  """
  out = {}
  for lang in benchmark.langs:
    split = benchmark[lang]
    seen = set()
    if lang in train.langs:
      for qid in train.ids[lang]:
        seen.update((train.query(lang, qid).strip(), train.positive(lang, qid).strip()))
    queries = {q.strip() for q in split.queries}
    candidates = {c.strip() for c in split.candidates}
    out[lang] = {'train': len(seen), 'eval': len(queries | candidates),
                 'shared': len(seen & (queries | candidates)),
                 'shared_queries': len(seen & queries),
                 'shared_candidates': len(seen & candidates)}
  total = {key: sum(counts[key] for counts in out.values()) for key in
           ('train', 'eval', 'shared', 'shared_queries', 'shared_candidates')}
  return {'langs': out, 'total': total}
