"""The model description that configs, README and reports use."""

import ml_collections

from hbt.model import build


def test_default_model_is_described_as_4_bit():
  from configs import default  # pylint: disable=g-import-not-at-top
  text = build.describe(default.get_config().model)
  assert 'multilingual-e5-small' in text and '4-bit' in text and 'Q4_0' in text
  hf = build.describe(ml_collections.ConfigDict({'source': 'hf', 'checkpoint': '/m/xlmr'}))
  assert '/m/xlmr' in hf and '4-bit' not in hf
