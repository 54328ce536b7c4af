"""Last-layer fitters of the random-feature model against closed forms: gradient descent per singular direction,
ridge → pseudo-inverse, NumPy's lstsq; and the condition number of random features peaking at P = N."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.dynamics import linear_theory
from toolkit.dynamics import random_features as rf


def problem(key, n=30, p=45, outputs=3):
  k1, k2, k3 = jax.random.split(key, 3)
  x = jax.random.normal(k1, (n, 8))
  z = rf.random_feature_map(x, rf.init_first_layer(k2, 8, p))
  y = jax.random.normal(k3, (n, outputs))
  return z, y


@pytest.mark.parametrize("p", [12, 30, 45])
def test_gd_matches_the_closed_form_per_singular_direction(key, x64, p):
  z, y = problem(key, p=p)
  lr = rf.relative_lr(z, 0.9)
  for t in (1, 7, 300):
    np.testing.assert_allclose(
      rf.fit_gd(z, y, lr=lr, num_steps=t), linear_theory.gd_closed_form(z, y, lr=lr, num_steps=t), rtol=1e-8, atol=1e-10
    )


def test_gd_converges_to_the_minimum_norm_solution_and_that_equals_lstsq(key, x64):
  z, y = problem(key)
  w = rf.fit_min_norm(z, y)
  np.testing.assert_allclose(w, np.linalg.lstsq(np.asarray(z), np.asarray(y), rcond=None)[0], rtol=1e-8, atol=1e-10)
  # Overparametrised (P > N): it interpolates.
  np.testing.assert_allclose(z @ w, y, atol=1e-8)
  # GD from zero stays in the row space, so its limit is the minimum-norm interpolant.
  s = rf.singular_values(z)
  lr = 1.0 / s[0] ** 2
  steps = int(np.ceil(np.log(1e-12) / np.log1p(-float(lr * s[-1] ** 2))))
  np.testing.assert_allclose(rf.fit_gd(z, y, lr=lr, num_steps=steps), w, rtol=1e-6, atol=1e-8)


def test_ridge_tends_to_the_pseudo_inverse_and_matches_the_normal_equations(key, x64):
  z, y = problem(key, p=20)
  np.testing.assert_allclose(rf.fit_ridge(z, y, ridge=1e-12), rf.fit_min_norm(z, y), rtol=1e-6, atol=1e-9)
  lam = 0.7
  direct = np.linalg.solve(np.asarray(z.T @ z) + lam * np.eye(20), np.asarray(z.T @ y))
  np.testing.assert_allclose(rf.fit_ridge(z, y, ridge=lam), direct, rtol=1e-8)


def test_masked_columns_change_nothing(key, x64):
  z, y = problem(key, p=45)
  masked = rf.mask_features(z, 20)
  np.testing.assert_allclose(rf.fit_min_norm(masked, y)[:20], rf.fit_min_norm(z[:, :20], y), rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(rf.fit_min_norm(masked, y)[20:], 0.0, atol=1e-12)
  lr = rf.relative_lr(z, 1.0)
  np.testing.assert_allclose(
    rf.fit_gd(masked, y, lr=lr, num_steps=50)[:20], rf.fit_gd(z[:, :20], y, lr=lr, num_steps=50)
  )
  np.testing.assert_allclose(rf.condition_number(masked, 20), np.linalg.cond(np.asarray(z[:, :20])), rtol=1e-8)


def test_adam_fits_an_overparametrised_problem(key):
  z, y = problem(key, n=20, p=60, outputs=1)
  w = rf.fit_optax(z, y[:, 0], optimizer=optax.adam(1e-2), num_steps=3000)
  assert float(rf.squared_loss(z, w, y[:, 0])) < 1e-3 * float(rf.squared_loss(z, jnp.zeros(60), y[:, 0]))


def test_condition_number_of_random_features_peaks_near_p_equals_n(key):
  n = 60
  x = jax.random.normal(key, (n, 10))
  widths = np.arange(12, 241, 6)

  def cond(k):
    z = rf.random_feature_map(x, rf.init_first_layer(k, 10, 240))
    return jax.vmap(lambda p: rf.condition_number(rf.mask_features(z, p), p))(jnp.asarray(widths))

  median = np.median(np.asarray(jax.vmap(cond)(jax.random.split(key, 20))), axis=0)
  peak = widths[np.argmax(median)]
  assert abs(peak - n) <= 0.1 * n, (peak, median)
  assert median.max() > 10 * median[0] and median.max() > 10 * median[-1]


def test_jit_equals_no_jit_and_bad_input_is_refused(key):
  z, y = problem(key)
  np.testing.assert_allclose(
    jax.jit(rf.fit_gd, static_argnames="num_steps")(z, y, lr=0.01, num_steps=20), rf.fit_gd(z, y, lr=0.01, num_steps=20)
  )
  with pytest.raises(ValueError, match="`targets`"):
    rf.fit_min_norm(z, y[:-1])
  with pytest.raises(ValueError, match="`features`"):
    rf.fit_gd(z[0], y, lr=0.1, num_steps=3)
  with pytest.raises(ValueError, match="`num_steps`"):
    rf.fit_gd(z, y, lr=0.1, num_steps=-1)
  with pytest.raises(TypeError, match="`optimizer`"):
    rf.fit_optax(z, y, optimizer="adam", num_steps=3)
  with pytest.raises(ValueError, match="`ridge`"):
    rf.fit_ridge(z, y, ridge=-1.0)


def test_feature_map_refuses_bad_shapes_and_counts(key):
  with pytest.raises(ValueError, match="`x`"):
    rf.random_feature_map(jnp.ones((4, 3)), rf.init_first_layer(key, 5, 7))
  with pytest.raises(ValueError, match="`num_features`"):
    rf.init_first_layer(key, 3, -1)
  with pytest.raises(ValueError, match="`num_inputs`"):
    rf.init_first_layer(key, 2.5, 4)
  z = jnp.ones((6, 4))
  with pytest.raises(ValueError, match="`weights` \\(num_features,\\)"):
    rf.squared_loss(z, jnp.ones(3), jnp.ones(6))
  with pytest.raises(ValueError, match="`targets` must be"):
    rf.squared_loss(z, jnp.ones(4), jnp.ones(5))
  with pytest.raises(ValueError, match="`targets` must have \\(3,\\) outputs"):
    rf.squared_loss(z, jnp.ones((4, 3)), jnp.ones((6, 2)))
  with pytest.raises(ValueError, match="`labels` must have shape \\(6,\\)"):
    rf.classification_error(z, jnp.ones((4, 3)), jnp.zeros(5, jnp.int32))


def test_bad_input_masks_spectra_and_step_sizes(key):
  z = jnp.ones((6, 4))
  with pytest.raises(ValueError, match="`num_features` must be an int in \\[0, 4\\]"):
    rf.mask_features(z, 5)
  with pytest.raises(ValueError, match="`num_features` must be an int in \\[0, 4\\]"):
    rf.mask_features(z, -1)
  with pytest.raises(TypeError, match="`num_features` must be an integer"):
    rf.mask_features(z, 2.5)
  with pytest.raises(ValueError, match="`features` must have a last axis"):
    rf.mask_features(jnp.float32(1.0), 0)
  with pytest.raises(ValueError, match="`features` must be a matrix"):
    rf.singular_values(jnp.ones(4))
  with pytest.raises(ValueError, match="`features` must be a matrix"):
    rf.condition_number(jnp.ones((2, 6, 4)))
  with pytest.raises(ValueError, match="`num_features` must be an int in \\[1, 4\\]"):
    rf.condition_number(z, 0)
  with pytest.raises(TypeError, match="`num_features` must be an integer"):
    rf.condition_number(z, jnp.float32(2.0))
  for fraction in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="`fraction` must be a scalar > 0"):
      rf.relative_lr(z, fraction)
  with pytest.raises(ValueError, match="`features` must be a matrix"):
    rf.relative_lr(jnp.ones(4), 1.0)
  with pytest.raises(ValueError, match="`train` and `test` must be \\(num_points, num_features\\)"):
    rf.standardize_features(z, jnp.ones((3, 5)))
  with pytest.raises(ValueError, match="`train` and `test` must be \\(num_points, num_features\\)"):
    rf.standardize_features(jnp.ones(4), jnp.ones(4))
  with pytest.raises(ValueError, match="`eps` must be a finite scalar >= 0"):
    rf.standardize_features(z, z, eps=-1e-6)


def test_bad_input_linear_theory(key):
  z, y = problem(key)
  with pytest.raises(ValueError, match="`targets`"):
    linear_theory.gd_closed_form(z, y[:-1], lr=0.01, num_steps=3)
  with pytest.raises(ValueError, match="`features`"):
    linear_theory.gd_closed_form(z[0], y, lr=0.01, num_steps=3)
  with pytest.raises(ValueError, match="`num_steps` must be an int >= 0"):
    linear_theory.gd_closed_form(z, y, lr=0.01, num_steps=-1)
  with pytest.raises(ValueError, match="`lr` must be a scalar > 0"):
    linear_theory.gd_closed_form(z, y, lr=0.0, num_steps=3)
  with pytest.raises(ValueError, match="`num_steps` must be an int >= 0"):
    linear_theory.fitted_fraction(jnp.ones(3), lr=0.1, num_steps=2.5)
  with pytest.raises(ValueError, match="`lr` must be a scalar > 0"):
    linear_theory.fitted_fraction(jnp.ones(3), lr=float("nan"), num_steps=2)
