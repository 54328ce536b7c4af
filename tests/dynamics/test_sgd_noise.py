"""SGD at temperature T on the α-scaled centred model: determinism of full batch, T as the control parameter,
exact stop at zero hinge loss, the lazy limit, the normalised activation, and the tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from toolkit.dynamics import sgd_noise as sn
from toolkit.dynamics import tasks


def sign_problem(num=64, dim=5, seed=0):
  t = tasks.make_task("sign", jax.random.key(seed), num, 500, dim=dim)
  return t, sn.init_perceptron(jax.random.key(seed + 100), dim)


def run_perceptron(t, w0, key, *, temperature, batch_size, alpha=1.0, max_steps=40_000, **kw):
  return sn.train(
    sn.perceptron_apply,
    w0,
    t.x_train,
    t.y_train,
    key,
    alpha=alpha,
    temperature=temperature,
    width=1,
    batch_size=batch_size,
    max_steps=max_steps,
    **kw,
  )


def test_normalized_activation_has_unit_second_moment():
  for phi in (jax.nn.relu, jnp.tanh, jax.nn.silu):
    exact, _ = integrate.quad(lambda g, phi=phi: float(phi(g)) ** 2 * np.exp(-g * g / 2) / np.sqrt(2 * np.pi), -12, 12)
    np.testing.assert_allclose(sn.gaussian_second_moment(phi), exact, rtol=1e-4)
    np.testing.assert_allclose(sn.gaussian_second_moment(sn.normalize_activation(phi)), 1.0, rtol=1e-6)
  # Closed form for ReLU: E relu(g)² = 1/2.
  np.testing.assert_allclose(float(sn.NORMALIZED_RELU(1.0)), np.sqrt(2.0), rtol=1e-4)


def test_output_is_zero_at_initialisation_and_the_loss_is_one_over_alpha(key):
  x = jax.random.normal(key, (20, 5))
  p0 = sn.init_mlp(jax.random.key(1), 5, 16, depth=2)
  o = sn.mlp_apply(p0, x) - sn.mlp_apply(p0, x)
  assert float(jnp.max(jnp.abs(o))) == 0.0
  for alpha in (0.01, 1.0, 100.0):
    np.testing.assert_allclose(sn.alpha_hinge_loss(alpha, o, jnp.ones(20)), 1.0 / alpha, rtol=1e-6)


def test_mlp_is_the_mean_field_formula_written_out(key):
  x = jax.random.normal(key, (7, 4))
  p = sn.init_mlp(jax.random.key(2), 4, 6)
  w, a = np.asarray(p["hidden"][0], np.float64), np.asarray(p["out"], np.float64)
  c = np.sqrt(0.5)
  expected = (np.maximum(np.asarray(x, np.float64) @ w / 2.0, 0) / c) @ a / 6
  np.testing.assert_allclose(sn.mlp_apply(p, x), expected, rtol=2e-4, atol=1e-6)


def test_step_size_and_one_sgd_step_by_hand(key):
  assert sn.step_size(1e-3, 2.0, 100, 8) == pytest.approx(1.6)
  t, w0 = sign_problem(num=8)
  out0 = sn.perceptron_apply(w0, t.x_train)
  state = sn.init(w0 + 0.0, key)
  # Full batch: the step is w + dt · mean over points with margin < 1 of y x / √d (all margins are 0 at start).
  new = sn.step(state, sn.perceptron_apply, t.x_train, t.y_train, out0, alpha=2.0, dt=0.5, batch_size=8)
  expected = w0 + 0.5 * np.mean(np.asarray(t.y_train)[:, None] * np.asarray(t.x_train), 0) / np.sqrt(5)
  np.testing.assert_allclose(new.params, expected, rtol=1e-5)
  assert int(new.step) == 1 and int(new.last_active) == 0


def test_full_batch_is_deterministic_and_stops_at_exactly_zero_hinge_loss():
  t, w0 = sign_problem()
  runs = [run_perceptron(t, w0, jax.random.key(s), temperature=0.01, batch_size=64) for s in (0, 1)]
  for r in runs:
    assert bool(r.converged) and float(r.train_loss) == 0.0 and float(r.min_margin) >= 1.0
  # Equal up to the order of summation (the batch is all points, in an order set by the key).
  np.testing.assert_allclose(runs[0].params, runs[1].params, rtol=1e-5)
  assert int(runs[0].num_steps) == int(runs[1].num_steps)
  # t* is exact: one step fewer and some margin is still below 1.
  rerun = run_perceptron(
    t, w0, jax.random.key(0), temperature=0.01, batch_size=64, max_steps=int(runs[0].num_steps) - 1, check_every=1
  )
  assert not bool(rerun.converged) and float(rerun.train_loss) > 0
  # Below T_c, small-batch SGD ends on the same classifier as gradient descent.
  sgd = run_perceptron(t, w0, jax.random.key(3), temperature=0.01, batch_size=8)
  agree = jnp.mean(jnp.sign(t.x_test @ (sgd.params - w0)) == jnp.sign(t.x_test @ (runs[0].params - w0)))
  assert float(agree) > 0.97


def test_jit_equals_no_jit_and_the_check_interval_does_not_change_the_result():
  t, w0 = sign_problem()
  kw = {"temperature": 0.3, "batch_size": 8}
  a = run_perceptron(t, w0, jax.random.key(5), check_every=50, **kw)
  b = jax.jit(lambda k: run_perceptron(t, w0, k, check_every=50, **kw))(jax.random.key(5))
  c = run_perceptron(t, w0, jax.random.key(5), check_every=7, **kw)
  np.testing.assert_allclose(a.params, b.params, rtol=1e-6)
  for r in (b, c):
    assert int(r.num_steps) == int(a.num_steps)
    np.testing.assert_allclose(r.params, a.params, rtol=1e-6)


def test_padding_with_num_points_equals_the_smaller_training_set():
  t, w0 = sign_problem()
  small = t._replace(x_train=t.x_train[:40], y_train=t.y_train[:40])
  a = run_perceptron(small, w0, jax.random.key(1), temperature=0.01, batch_size=40)
  b = run_perceptron(t, w0, jax.random.key(1), temperature=0.01, batch_size=40, num_points=40)
  np.testing.assert_allclose(a.params, b.params, rtol=1e-5)
  assert int(a.num_steps) == int(b.num_steps) and bool(b.converged)


@pytest.mark.slow
def test_same_temperature_different_lr_and_batch_give_equal_statistics():
  # T = dt/(α h B) is the control parameter: (B = 4, dt = 4T) and (B = 16, dt = 16T) over 24 seeds each.
  t, w0 = sign_problem(num=128, dim=5)
  temperature = 2.0

  def stats_for(batch_size):
    keys = jax.random.split(jax.random.key(batch_size), 24)
    r = jax.vmap(lambda k: run_perceptron(t, w0, k, temperature=temperature, batch_size=batch_size))(keys)
    assert bool(jnp.all(r.converged))
    return np.log(np.asarray(jax.vmap(sn.relative_weight_change, (0, None))(r.params, w0))), np.log(np.asarray(r.time))

  dw4, t4 = stats_for(4)
  dw16, t16 = stats_for(16)
  for a, b in ((dw4, dw16), (t4, t16)):
    assert stats.ttest_ind(a, b).pvalue > 0.01
    assert abs(a.mean() - b.mean()) < 0.25
  # The control: 16× the temperature at the same batch size gives a clearly different weight change.
  keys = jax.random.split(jax.random.key(99), 24)
  hot = jax.vmap(lambda k: run_perceptron(t, w0, k, temperature=16 * temperature, batch_size=16))(keys)
  dw_hot = np.log(np.asarray(jax.vmap(sn.relative_weight_change, (0, None))(hot.params, w0)))
  assert stats.ttest_ind(dw_hot, dw16).pvalue < 1e-4


@pytest.mark.slow
def test_weight_change_shrinks_as_alpha_grows_lazy_limit():
  t = tasks.make_task("sign", jax.random.key(0), 64, 10, dim=5)
  p0 = sn.init_mlp(jax.random.key(1), 5, 32)
  changes = []
  for alpha in (10.0, 100.0, 1000.0):
    r = sn.train(
      sn.mlp_apply, p0, t.x_train, t.y_train, jax.random.key(2), alpha=alpha, temperature=1e-3 / alpha**2,
      width=32, batch_size=64, max_steps=20_000,
    )  # fmt: skip
    assert bool(r.converged) and float(r.train_loss) == 0.0
    changes.append(float(sn.relative_weight_change(r.params, p0)))
  ratios = np.array(changes[:-1]) / np.array(changes[1:])
  # ‖Δw‖/‖w₀‖ ∝ 1/α in the lazy limit: each 10× in α divides it by about 10.
  assert np.all(ratios > 5) and np.all(ratios < 20), changes


def test_tasks():
  t = tasks.make_task("stripe", jax.random.key(0), 4000, 10, dim=3)
  assert abs(float(jnp.mean(t.y_train))) < 0.06  # balanced stripe
  np.testing.assert_array_equal(t.y_train, tasks.label("stripe", t.x_train))
  d = tasks.make_task("digits_parity", jax.random.key(0), 300, 200)
  assert d.x_train.shape == (300, 64) and set(np.unique(d.y_test).tolist()) == {-1.0, 1.0}
  np.testing.assert_allclose(np.asarray(d.x_train).std(0).max(), 1.0, rtol=1e-4)


def test_bad_input():
  t, w0 = sign_problem(num=16)
  with pytest.raises(ValueError, match="batch_size"):
    run_perceptron(t, w0, jax.random.key(0), temperature=0.1, batch_size=32)
  with pytest.raises(ValueError, match="temperature"):
    run_perceptron(t, w0, jax.random.key(0), temperature=-1.0, batch_size=4)
  with pytest.raises(ValueError, match="max_steps"):
    run_perceptron(t, w0, jax.random.key(0), temperature=0.1, batch_size=4, max_steps=0)
  with pytest.raises(ValueError, match="`x`"):
    sn.mlp_apply(sn.init_mlp(jax.random.key(0), 3, 4), jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="`centred_output`, `y` and `weights` must have one shape"):
    sn.alpha_hinge_loss(1.0, jnp.ones(5), jnp.ones(4))
  for alpha in (0.0, -2.0):
    with pytest.raises(ValueError, match="`alpha` must be a scalar > 0"):
      sn.alpha_hinge_loss(alpha, jnp.ones(5), jnp.ones(5))
  with pytest.raises(ValueError, match="`batch_size` must be a scalar > 0"):
    sn.step_size(0.1, 1.0, 10, 0)
  with pytest.raises(ValueError, match="name"):
    tasks.make_task("parity", jax.random.key(0), 10, 10)
  with pytest.raises(TypeError, match="activation"):
    sn.normalize_activation(3.0)


# Bad input


def test_bad_input_activations_and_norms():
  with pytest.raises(TypeError, match="`x`"):
    sn.NORMALIZED_RELU("1.0")
  with pytest.raises(TypeError, match="`activation`"):
    sn.gaussian_second_moment("relu")
  with pytest.raises(TypeError, match="`tree`"):
    sn.tree_norm({"w": jnp.ones(3), "name": "layer"})
  with pytest.raises(ValueError, match="`params` and `params0`"):
    sn.relative_weight_change({"w": jnp.ones(3)}, {"w": jnp.ones(3), "b": jnp.ones(1)})
  with pytest.raises(ValueError, match="`params` and `params0`"):
    sn.relative_weight_change(jnp.ones(3), jnp.ones(1))


def test_bad_input_perceptron_and_sgd():
  t, w0 = sign_problem(num=16)
  with pytest.raises(ValueError, match="`num_inputs`"):
    sn.init_perceptron(jax.random.key(0), 0)
  with pytest.raises(ValueError, match="`x`"):
    sn.perceptron_apply(w0, jnp.ones((3, 4)))
  with pytest.raises(TypeError, match="`key`"):
    sn.init(w0, 0)
  state = sn.init(w0, jax.random.key(0))
  out0 = sn.perceptron_apply(w0, t.x_train)
  for batch_size in (0, 17):
    with pytest.raises(ValueError, match="`batch_size`"):
      sn.step(state, sn.perceptron_apply, t.x_train, t.y_train, out0, alpha=1.0, dt=0.1, batch_size=batch_size)
  with pytest.raises(ValueError, match="`batch_size`"):
    sn.train(
      sn.perceptron_apply, w0, t.x_train, t.y_train, jax.random.key(0), alpha=1.0, temperature=0.1, width=1,
      batch_size=32, max_steps=10,
    )  # fmt: skip
  with pytest.raises(TypeError, match="`apply_fn`"):
    sn.sign_error("perceptron", w0, w0, t.x_test, t.y_test)
  with pytest.raises(ValueError, match="`y`"):
    sn.sign_error(sn.perceptron_apply, w0, w0, t.x_test, t.y_test[:, None])


def test_bad_input_task_labels():
  with pytest.raises(ValueError, match="`name` must be 'sign' or 'stripe'"):
    tasks.label("digits_parity", jnp.ones((3, 2)))
  with pytest.raises(ValueError, match="`x` must have shape \\(n, d\\)"):
    tasks.label("sign", jnp.ones(3))
  with pytest.raises(ValueError, match="`x` must have shape \\(n, d\\)"):
    tasks.label("stripe", jnp.ones((3, 0)))
