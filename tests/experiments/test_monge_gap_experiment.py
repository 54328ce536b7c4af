"""The Monge-gap experiment at a small size: the regularised map beats the fitting loss alone against T*."""

import pytest

from experiments import monge_gap as mg_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = mg_experiment.get_config("quick")
  config.dims = (2,)
  config.num_steps = 400
  config.maps_2d.costs, config.maps_2d.lambdas = ("l2",), (2.0,)
  config.maps_2d.num_steps = 100
  record = xp.run_experiment(mg_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert m["d2_monge_gap_l2_uvp"] < m["d2_fitting_only_l2_uvp"]
  # The displacement-penalty control ran alike and is judged as a claim of its own.
  assert m["max_uvp_ratio_mg_over_displacement"] == m["d2_monge_gap_l2_uvp"] / m["d2_displacement_l2_uvp"]
  assert (tmp_path / "l2_uvp.png").exists() and (tmp_path / "maps_2d.png").exists()


def test_bad_config(tmp_path):
  config = mg_experiment.get_config("quick")
  config.maps_2d.costs = ("l2", "cosine")
  with pytest.raises(xp.ConfigError, match="unknown cost 'cosine'"):
    xp.run_experiment(mg_experiment.EXPERIMENT, config, str(tmp_path))
