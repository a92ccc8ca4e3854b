"""Registry of the retrieval benchmarks: folders, languages, pinned public URLs and checksums.

Both benchmarks come from github.com/google-research-datasets/lareqa, each pinned to a commit so
that a download always yields the bytes whose SHA-256 is recorded here (and in the SHA256SUMS of
the shared data copy).
"""

from collections.abc import Iterable, Mapping
import dataclasses
import types

REPOSITORY = 'google-research-datasets/lareqa'
URL_TEMPLATE = 'https://raw.githubusercontent.com/{repository}/{commit}/{folder}/{lang}.json'


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one benchmark lives and how to check its files.

  Attributes:
    name: registry name, e.g. 'xquad_r'.
    folder: folder of the benchmark inside a data directory and inside the repository.
    langs: language codes of the benchmark, in canonical order.
    parallel: True if every question id appears in every language.
    commit: full id of the repository commit the files are pinned to.
    sha256: hex SHA-256 digest of each language file, keyed by language code.
  """

  name: str
  folder: str
  langs: tuple[str, ...]
  parallel: bool
  commit: str
  sha256: Mapping[str, str]

  def url(self, lang: str) -> str:
    """The pinned download URL of one language file."""
    return URL_TEMPLATE.format(
        repository=REPOSITORY, commit=self.commit, folder=self.folder, lang=lang)

  def relative_path(self, lang: str) -> str:
    """The path of one language file relative to a data directory, e.g. 'xquad-r/en.json'."""
    return f'{self.folder}/{lang}.json'


XQUAD_R = Source(
    name='xquad_r',
    folder='xquad-r',
    langs=('ar', 'de', 'el', 'en', 'es', 'hi', 'ru', 'th', 'tr', 'vi', 'zh'),
    parallel=True,
    commit='9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c',
    sha256=types.MappingProxyType({
        'ar': 'c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d',
        'de': '16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949',
        'el': '163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6',
        'en': '7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe',
        'es': 'f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de',
        'hi': 'ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872',
        'ru': '7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1',
        'th': 'c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4',
        'tr': 'f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94',
        'vi': 'e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995',
        'zh': '80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed',
    }),
)

# MLQA-R was later removed upstream; the pinned commit still serves it.
MLQA_R = Source(
    name='mlqa_r',
    folder='mlqa-r',
    langs=('ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'),
    parallel=False,
    commit='354d67d1cd066854cdfbf5ad0e6105528976141d',
    sha256=types.MappingProxyType({
        'ar': '2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137',
        'de': 'ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886',
        'en': 'fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4',
        'es': '70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7',
        'hi': '4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654',
        'vi': '9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85',
        'zh': '57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc',
    }),
)

SOURCES: Mapping[str, Source] = types.MappingProxyType({s.name: s for s in (XQUAD_R, MLQA_R)})


def get(benchmark: str, field: str = 'benchmark') -> Source:
  """The Source registered as `benchmark`.

  Args:
    benchmark: registry name, 'xquad_r' or 'mlqa_r'.
    field: how the caller's input is named in the error, e.g. 'config.eval.benchmark'.

  Returns:
    The registered Source.

  Raises:
    ValueError: the name is not registered.
  """
  source = SOURCES.get(benchmark)
  if source is None:
    raise ValueError(f'{field}: unknown benchmark {benchmark!r}; allowed: {", ".join(SOURCES)}')
  return source


def split_langs(text: str) -> tuple[str, ...]:
  """The codes of a comma-separated language list, e.g. 'en, de' -> ('en', 'de'); an empty
  entry stays '' (for validate_langs to refuse)."""
  return tuple(code.strip() for code in text.split(','))


def validate_langs(benchmark: str,
                   langs: str | Iterable[str] | None,
                   field: str = 'langs') -> tuple[str, ...]:
  """Checks language codes against a benchmark and returns them as a tuple.

  Args:
    benchmark: registry name, 'xquad_r' or 'mlqa_r'.
    langs: language codes; a string is read as a comma-separated list ('en,de'); None or an
      empty string means every language of the benchmark.
    field: how the caller's input is named in errors, e.g. 'config.eval.langs'.

  Returns:
    The codes in the given order (all of the benchmark's languages when `langs` is None).

  Raises:
    ValueError: an unknown or repeated code, or an explicitly empty list; the message names
      `field`, the bad code and the allowed values.
  """
  source = get(benchmark)
  if langs is None or (isinstance(langs, str) and not langs.strip()):
    return source.langs
  if isinstance(langs, str):
    langs = split_langs(langs)
  codes = tuple(langs)
  allowed = ', '.join(source.langs)
  if not codes:
    raise ValueError(f'{field}: empty language list for {benchmark}; allowed: {allowed}')
  seen = set()
  for code in codes:
    if code not in source.langs:
      raise ValueError(f'{field}: unknown language {code!r} for {benchmark}; allowed: {allowed}')
    if code in seen:
      raise ValueError(f'{field}: language {code!r} given twice for {benchmark}')
    seen.add(code)
  return codes
