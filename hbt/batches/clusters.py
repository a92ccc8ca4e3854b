"""Language clusters for cross-lingual batches (issue 7 §2): which languages count as similar.

A clustering is a dict {language: cluster name}. It comes from config.train.lang_clusters:
  * 'family' or 'script': the built-in tables below (the XQuAD-R / MLQA-R languages);
  * an explicit spec 'name:lang,lang;name:lang;...', e.g. 'latin:en,de,es;cyrillic:ru';
  * or 'model': computed once at the start of the main job from the base model (hbt.train.loop
    `lang_clusters`): the training positives of `shared_ids` (parallel sentences) are encoded,
    each pair of languages is scored by the cosine similarity of its two mean embeddings over the
    ids both have (`similarity`), and `from_similarity` cuts the agglomerative tree into
    config.train.cluster_count clusters. The run logs it and writes it to workdir/clusters.json.
    (Pairwise, because MLQA-R has no id in all 7 languages; on XQuAD-R, where every id is in every
    language, it equals `from_embeddings` over the same sentences.)
The sampler (hbt.batches.sampler, argument lang_clusters) draws a cross-lingual pair within a
cluster with probability cluster_p_in, otherwise across clusters.
"""

from collections.abc import Mapping

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial import distance

# Top-level language families of the XQuAD-R / MLQA-R languages.
FAMILY = {'indo-european': ('de', 'el', 'en', 'es', 'hi', 'ro', 'ru'), 'afro-asiatic': ('ar',),
          'turkic': ('tr',), 'sino-tibetan': ('zh',), 'kra-dai': ('th',),
          'austroasiatic': ('vi',)}
# Writing systems of the XQuAD-R / MLQA-R languages.
SCRIPT = {'latin': ('de', 'en', 'es', 'ro', 'tr', 'vi'), 'cyrillic': ('ru',), 'greek': ('el',),
          'arabic': ('ar',), 'devanagari': ('hi',), 'thai': ('th',), 'han': ('zh',)}
TABLES = {'family': FAMILY, 'script': SCRIPT}
MODEL = 'model'  # config.train.lang_clusters: computed from the base model (module docstring)


def _mapping(groups: Mapping[str, tuple[str, ...]], where: str) -> dict[str, str]:
  """{lang: cluster} from {cluster: langs}; a ValueError naming `where` if a language repeats."""
  out = {}
  for name, langs in groups.items():
    for lang in langs:
      if lang in out:
        raise ValueError(f'{where}: language {lang!r} is in clusters {out[lang]!r} and {name!r}')
      out[lang] = name
  return out


def parse(spec: str, field: str = 'lang_clusters') -> dict[str, str]:
  """{lang: cluster name} of a config value: 'family', 'script' or 'name:l1,l2;name:l3;...'.

  Raises:
    ValueError: naming `field`, for an empty spec, a malformed group, an empty cluster or language,
      or a language in two clusters.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f'{field} must be {", ".join(TABLES)} or "name:lang,lang;...", got {spec!r}')
  if spec in TABLES:
    return _mapping(TABLES[spec], field)
  groups = {}
  for group in spec.split(';'):
    name, sep, langs = group.partition(':')
    name, langs = name.strip(), tuple(x.strip() for x in langs.split(','))
    if not sep or not name or not all(langs) or name in groups:
      raise ValueError(f'{field}: bad cluster {group!r} in {spec!r} (want "name:lang,lang", '
                       f'names distinct, or one of {", ".join(TABLES)})')
    groups[name] = langs
  return _mapping(groups, field)


def format_spec(clustering: Mapping[str, str]) -> str:
  """The spec string of {lang: cluster} that `parse` reads back (clusters and languages sorted)."""
  groups = {}
  for lang, name in clustering.items():
    groups.setdefault(name, []).append(lang)
  return ';'.join(f'{name}:{",".join(sorted(groups[name]))}' for name in sorted(groups))


def from_embeddings(embeddings: Mapping[str, np.ndarray], num_clusters: int,
                    method: str = 'average') -> dict[str, str]:
  """Clusters languages by the cosine similarity of their mean embeddings over parallel sentences.

  Args:
    embeddings: {lang: [N, D]} embeddings of the same N parallel sentences in each language.
    num_clusters: how many clusters to cut the agglomerative tree into (1 .. number of languages).
    method: the scipy.cluster.hierarchy linkage ('average', 'complete', 'single').

  Returns:
    {lang: 'c0' | 'c1' | ...}, clusters numbered by their first language in sorted order.
  """
  langs = sorted(embeddings)
  shapes = {lang: np.shape(embeddings[lang]) for lang in langs}
  if len(set(shapes.values())) != 1 or len(shapes[langs[0]]) != 2:
    raise ValueError(f'embeddings must be [N, D] arrays of one shape (parallel sentences), '
                     f'got shapes {shapes}')
  means = np.stack([np.asarray(embeddings[lang], np.float64).mean(axis=0) for lang in langs])
  means /= np.linalg.norm(means, axis=1, keepdims=True)
  return from_similarity(langs, means @ means.T, num_clusters, method)


def from_similarity(langs, similarity: np.ndarray, num_clusters: int,
                    method: str = 'average') -> dict[str, str]:
  """Clusters languages by a symmetric similarity matrix (1 on the diagonal; distance 1 - s).

  Args:
    langs: the languages of similarity's rows and columns, sorted.
    similarity: [L, L] e.g. cosine similarities of mean embeddings.
    num_clusters: how many clusters to cut the agglomerative tree into (1 .. L).
    method: the scipy.cluster.hierarchy linkage ('average', 'complete', 'single').

  Returns:
    {lang: 'c0' | 'c1' | ...}, clusters numbered by their first language in sorted order.
  """
  langs = list(langs)
  if not 1 <= num_clusters <= len(langs):
    raise ValueError(f'num_clusters must be in [1, {len(langs)}], got {num_clusters!r}')
  if len(langs) == 1:
    return {langs[0]: 'c0'}
  dist = np.clip(1.0 - np.asarray(similarity, np.float64), 0.0, None)
  dist = (dist + dist.T) / 2
  np.fill_diagonal(dist, 0.0)
  tree = hierarchy.linkage(distance.squareform(dist), method=method)
  labels = hierarchy.fcluster(tree, t=num_clusters, criterion='maxclust')
  names = {}
  for label in labels:  # langs are sorted: number clusters by first appearance
    names.setdefault(label, f'c{len(names)}')
  return {lang: names[label] for lang, label in zip(langs, labels)}


def shared_ids(pairs, count: int) -> dict[tuple[str, str], tuple[str, ...]]:
  """{(a, b): the first `count` ids (sorted) that languages a < b both have} of a PairSet."""
  ids = {lang: set(pairs.ids[lang]) for lang in pairs.langs}
  langs = sorted(pairs.langs)
  return {(a, b): tuple(sorted(ids[a] & ids[b]))[:count]
          for i, a in enumerate(langs) for b in langs[i + 1:]}


def similarity(embeddings: Mapping[tuple[str, str], np.ndarray],
               shared: Mapping[tuple[str, str], tuple[str, ...]]) -> tuple[list[str], np.ndarray]:
  """(sorted langs, [L, L] similarity): for each pair (a, b) of `shared`, the cosine of the mean
  embeddings of a's and b's sentences of the ids they share.

  Args:
    embeddings: {(lang, id): [D] embedding} of every sentence `shared` names.
    shared: `shared_ids`.

  Raises:
    ValueError: a pair of languages that share no id.
  """
  langs = sorted({lang for pair in shared for lang in pair})
  out = np.eye(len(langs))
  for (a, b), ids in shared.items():
    if not ids:
      raise ValueError(f'languages {a} and {b} share no parallel id, so their similarity is '
                       'unknown: set config.train.lang_clusters from a table or a spec')
    means = [np.mean([embeddings[(lang, i)] for i in ids], axis=0) for lang in (a, b)]
    means = [m / np.linalg.norm(m) for m in means]
    out[langs.index(a), langs.index(b)] = out[langs.index(b), langs.index(a)] = means[0] @ means[1]
  return langs, out
