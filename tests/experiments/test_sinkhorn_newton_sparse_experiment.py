"""The SNS experiment end to end on the paper's random-assignment case (n = 500, η = 1200, float64), and its
MNIST-like digit problems against their construction written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sinkhorn_newton_sparse as sns_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_random_assignment_case(tmp_path):
  config = sns_experiment.get_config("quick")
  config.cases = ("random_assignment",)
  config.baselines = ("sinkhorn",)
  record = xp.run_experiment(sns_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  measured = record["measured"]
  assert measured["random_assignment_sns_converged"] == 1.0 and measured["random_assignment_sinkhorn_converged"] == 1.0
  assert measured["random_assignment_iteration_ratio"] >= 50
  assert measured["random_assignment_sns_iterations"] <= 40  # the paper: 29
  # The dense Newton control takes the same steps but keeps all n entries of each row.
  assert measured["random_assignment_dense_newton_kept_entries_per_n"] == 500
  assert measured["random_assignment_dense_newton_converged"] == 1.0
  assert 1 <= measured["random_assignment_sns_kept_entries_per_n"] <= 40
  assert (tmp_path / "error_curves.png").exists() and "random_assignment | sns" in (tmp_path / "table.md").read_text()
  assert not jax.config.jax_enable_x64  # the experiment's float64 does not leak out of it


def test_bad_config_is_refused(tmp_path):
  config = sns_experiment.get_config("quick")
  config.cases = ("random_assignment", "mnist")
  with pytest.raises(xp.ConfigError, match="unknown case 'mnist'"):
    xp.run_experiment(sns_experiment.EXPERIMENT, config, str(tmp_path))


@pytest.mark.parametrize("case", ["digits_l2", "digits_l1"])
def test_digit_problems_follow_their_construction(case):
  config = sns_experiment.get_config("quick")
  config.image_side = 5
  with jax.enable_x64(True):  # the geometry's cost is computed lazily: read it inside
    prob = sns_experiment.make_problem(case, jax.random.key(3), config)
    assert prob.geom.shape == (25, 25) and prob.geom.cost_matrix.dtype == jnp.float64
    for marginal in (prob.a, prob.b):
      np.testing.assert_allclose(float(marginal.sum()), 1.0, rtol=1e-12)
      assert float(marginal.min()) > 0  # the floor gives every pixel mass (log-domain potentials stay finite)
    # Pixel (i, j) sits at (i, j) / (side - 1): corner to corner is 1 + 1 in both costs, one step 1/16 or 1/4.
    cost = np.asarray(prob.geom.cost_matrix)
    assert cost[0, 24] == pytest.approx(2.0) and cost[0, 0] == 0
    assert cost[0, 1] == pytest.approx(1 / 16 if case == "digits_l2" else 1 / 4)
    assert prob.geom.epsilon == pytest.approx(1 / 1200)


def test_digit_histogram_is_the_resized_image_with_a_floor():
  image = np.zeros(64, np.float32)
  image[27] = 16.0  # one lit pixel of the 8×8 image
  with jax.enable_x64(True):
    hist = np.asarray(sns_experiment.digit_histogram(image, 8))
  expected = image.astype(np.float64) / 16.0 + 0.01 / 64
  np.testing.assert_allclose(hist, expected / expected.sum(), rtol=1e-12)
