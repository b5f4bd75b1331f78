from data_pipelines import registry
from tests import fixtures_real_layouts as fx

def test_repro(tmp_path):
    fx.write_eurosat_ms(str(tmp_path / "raw"), per_class=8)
    registry.prepare("eurosat_ms", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"))
    src = registry.load_source("eurosat_ms", "train", str(tmp_path / "tfds"))
    print(len(src))
