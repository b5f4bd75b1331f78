"""Progressive training (slow): phase 1 (1 season, no TM) -> phase 2 (TM) starts from phase 1's params."""

import jax
import numpy as np
import pytest

from test_train_helpers import tiny_config, tiny_records
from seamo_jax.train.checkpoint import load_params
from seamo_jax.train.loop import run_pretraining
from seamo_jax.train.setup import build_train_setup


@pytest.mark.slow  # one tiny training run + one init, ~1.5 min
def test_phase2_initialises_from_phase1(tmp_path):
    phase1 = tiny_config(num_steps=4, mesh_shape=(4, 2, 1))
    phase1.data.seasons = 1
    phase1.data.season_subsample = True
    phase1.model.num_seasons = 2          # season table sized for phase 2
    phase1.model.fusion = "none"
    phase1.model.scan_layers = False      # phase 2 scans: warm start crosses block layouts
    summary = run_pretraining(phase1, tmp_path / "p1", source=tiny_records(seasons=2))
    assert summary["final_step"] == 4

    phase2 = tiny_config(num_steps=4, mesh_shape=(2, 2, 2))
    phase2.model.fusion = "tm"
    phase2.model.scan_layers = True
    phase2.init_from = str(tmp_path / "p1")
    setup = build_train_setup(phase2, tmp_path / "p2", tiny_records(seasons=2))
    report = setup.warm_start_report
    assert any(k.startswith("['encoder']") for k in report["copied"])
    assert report["fresh"] and all(k.startswith("['fusion']") for k in report["fresh"]), report["fresh"]
    assert not report["unused"]
    assert int(setup.state.step) == 0
    pretrained, _, _ = load_params(tmp_path / "p1")
    assert "blocks_0" in pretrained["encoder"]
    np.testing.assert_array_equal(np.asarray(setup.state.params["encoder"]["season_embed"]),
                                  np.asarray(pretrained["encoder"]["season_embed"]))
    np.testing.assert_array_equal(np.asarray(setup.state.params["encoder"]["blocks"]["mlp"]["fc1"]["kernel"][1]),
                                  np.asarray(pretrained["encoder"]["blocks_1"]["mlp"]["fc1"]["kernel"]))
    blocks = jax.tree.leaves(setup.state.params["encoder"]["blocks"])
    assert all(b.sharding.mesh.shape == setup.mesh.shape for b in blocks)
    setup.checkpointer.close()
