"""TFDS builders `xquad_r` and `mlqa_r`, thin wrappers over hbt.data.squad_r.

One BuilderConfig per language (`xquad_r/en`, `mlqa_r/de`, ...) and two splits:
  queries: id, question, answer_index (index of the answer in `candidates`), answer_sentence;
  candidates: index, sentence, paragraph.
TFDS keeps one feature set per dataset, so every example carries all seven features; those of the
other split are empty ('' or -1). TFDS stores examples in key-hash order, not file order: use
`index` and `answer_index` (positions in the language's candidate list), never the read order.

The source files come from the directory given as `source_dir=`, else paths.resolve_data_dir(None)
(downloaded there if missing); tfds' own `data_dir=` is where the built dataset is written. E.g.:

  builder = XquadR(config='en', source_dir='../shared/data', data_dir='/tmp/tfds')
  builder.download_and_prepare()
  queries = builder.as_dataset(split='queries')
"""

from collections.abc import Iterator
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hbt.data import paths
from hbt.data import sources
from hbt.data import squad_r
from hbt.data import types

_CITATION = """\
@inproceedings{roy-etal-2020-lareqa,
  title = {{LAR}e{QA}: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron
            and Yang, Yinfei},
  booktitle = {Proceedings of EMNLP 2020},
  year = {2020},
}
"""
_HOMEPAGE = 'https://github.com/google-research-datasets/lareqa'
MISSING_STR = ''
MISSING_INT = -1


def _features() -> tfds.features.FeaturesDict:
  """The union of the query and candidate features."""
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      'id': text,
      'question': text,
      'answer_index': tfds.features.Scalar(dtype=np.int32),
      'answer_sentence': text,
      'index': tfds.features.Scalar(dtype=np.int32),
      'sentence': text,
      'paragraph': text,
  })


def query_examples(split: types.LanguageSplit) -> Iterator[tuple[str, dict]]:
  """(key, example) pairs of the `queries` split of a LanguageSplit."""
  for qid, question, answer in zip(split.query_ids, split.queries, split.answer):
    yield qid, {
        'id': qid, 'question': question, 'answer_index': int(answer),
        'answer_sentence': split.candidates[answer],
        'index': MISSING_INT, 'sentence': MISSING_STR, 'paragraph': MISSING_STR,
    }


def candidate_examples(split: types.LanguageSplit) -> Iterator[tuple[int, dict]]:
  """(key, example) pairs of the `candidates` split of a LanguageSplit."""
  for i, (sentence, context) in enumerate(zip(split.candidates, split.contexts)):
    yield i, {
        'id': MISSING_STR, 'question': MISSING_STR, 'answer_index': MISSING_INT,
        'answer_sentence': MISSING_STR,
        'index': i, 'sentence': sentence, 'paragraph': split.paragraphs[context],
    }


class _SquadRBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared logic of the SQuAD-R builders; subclasses set SOURCE and BUILDER_CONFIGS."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  SOURCE: sources.Source

  def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
    """Builder over the files in `source_dir` (default: paths.resolve_data_dir(None))."""
    self._source_dir = paths.resolve_data_dir(source_dir)
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. Overrides tfds' lookup, which needs `importlib_resources` (not a dependency)."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    """Description, features, homepage and citation."""
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=_features(), homepage=_HOMEPAGE,
        citation=_CITATION)

  def _split_generators(self, dl_manager):
    """The `queries` and `candidates` splits of the configured language."""
    del dl_manager  # Files are fetched by hbt.data.paths (pinned URL, checked SHA-256).
    lang = self.builder_config.name
    path = paths.benchmark_file(self.SOURCE.name, lang, self._source_dir)
    split = squad_r.read_language(path, lang)
    return {
        'queries': self._generate_examples(query_examples(split)),
        'candidates': self._generate_examples(candidate_examples(split)),
    }

  def _generate_examples(self, examples: Iterator[tuple]) -> Iterator[tuple]:
    """Passes through the (key, example) pairs built by query_examples/candidate_examples."""
    yield from examples


def _configs(source: sources.Source) -> list[tfds.core.BuilderConfig]:
  """One BuilderConfig per language of `source`."""
  return [tfds.core.BuilderConfig(name=lang, description=f'{source.name}, language {lang}.')
          for lang in source.langs]


class XquadR(_SquadRBuilder):
  """XQuAD-R: XQuAD with sentence breaks, 11-way parallel (CC BY-SA 4.0)."""

  SOURCE = sources.XQUAD_R
  BUILDER_CONFIGS = _configs(sources.XQUAD_R)


class MlqaR(_SquadRBuilder):
  """MLQA-R: MLQA dev with sentence breaks, parallel across 2-4 languages (CC BY-NC 4.0)."""

  SOURCE = sources.MLQA_R
  BUILDER_CONFIGS = _configs(sources.MLQA_R)
