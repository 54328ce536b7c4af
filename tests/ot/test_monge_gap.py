"""The Monge gap against ott's estimator, its floor ε log n for optimal maps, and gradients."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
from ott.geometry import costs
from ott.neural.methods.monge_gap import monge_gap_from_samples
from ott.solvers.linear import sinkhorn

from toolkit.ot.monge_gap import (
  DEFAULT_LEARNING_RATE,
  DEFAULT_SOLVER_KWARGS,
  TRAINING_SOLVER_KWARGS,
  fit_map,
  monge_gap,
  monge_gap_output,
)
from toolkit.ot.sinkhorn_newton_sparse import SinkhornNewtonSparse

COSTS = [costs.SqEuclidean(), costs.Euclidean(), costs.PNormP(1.0), costs.SqPNorm(1.5)]


def samples(key, n=64, d=3):
  kx, ky = jax.random.split(key)
  return jax.random.normal(kx, (n, d)), jax.random.normal(ky, (n, d)) * 0.7 + 0.5


@pytest.mark.parametrize("cost_fn", COSTS, ids=lambda c: type(c).__name__)
def test_equals_ott_estimator(key, cost_fn):
  x, y = samples(key)
  ours = jax.jit(lambda x, y: monge_gap(x, y, cost_fn=cost_fn, epsilon=0.05))(x, y)
  theirs = monge_gap_from_samples(x, y, cost_fn=cost_fn, epsilon=0.05, **DEFAULT_SOLVER_KWARGS)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  # Relative ε as in ott.
  ours = monge_gap(x, y, cost_fn=cost_fn, epsilon=0.01, relative_epsilon="mean")
  theirs = monge_gap_from_samples(x, y, cost_fn=cost_fn, epsilon=0.01, relative_epsilon="mean", **DEFAULT_SOLVER_KWARGS)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_optimal_maps_sit_at_the_floor_and_a_permutation_does_not(x64, key):
  """Identity and translations are optimal for ‖·‖² (the identity also for ‖·‖): the gap is ε log n once the
  entropic plan is the diagonal one, i.e. when ε is small against the squared spacing of the points. A 6 × 6
  grid with spacing 2 and ε = 0.05 puts e^{-80} on any other pairing (arXiv 2302.04953, Sec. 3)."""
  grid = 2.0 * jnp.stack(jnp.meshgrid(jnp.arange(6.0), jnp.arange(6.0)), -1).reshape(-1, 2)
  n, eps = grid.shape[0], 0.05
  floor = eps * np.log(n)
  tight = sinkhorn.Sinkhorn(threshold=1e-10, max_iterations=10_000)
  cases = [
    (costs.SqEuclidean(), grid),
    (costs.SqEuclidean(), grid + jnp.array([0.2, 0.1])),
    (costs.Euclidean(), grid),
  ]
  for cost_fn, mapped in cases:
    out = monge_gap_output(grid, mapped, cost_fn=cost_fn, epsilon=eps, solver=tight)
    assert out.converged
    np.testing.assert_allclose(out.value, floor, rtol=1e-6)
    np.testing.assert_allclose(out.floor, floor, rtol=1e-12)
  # A large translation is just as optimal, but Sinkhorn from zero potentials must first absorb the separable
  # part of the cost (2 tᵀx / ε ~ 10³ here) and is not converged after 10⁴ iterations: close, not exact.
  far = monge_gap(grid, grid + jnp.array([0.7, -1.3]), epsilon=eps, solver=tight)
  np.testing.assert_allclose(far, floor, rtol=1e-3)
  shuffled = grid[jax.random.permutation(key, n)]
  assert monge_gap(grid, shuffled, epsilon=eps) > 50 * floor


def test_nonnegative_on_random_maps(key):
  for i in range(5):
    x, y = samples(jax.random.fold_in(key, i), n=32, d=4)
    for cost_fn in COSTS:
      assert monge_gap(x, y, cost_fn=cost_fn, epsilon=0.05) >= 0.05 * np.log(32) - 1e-3


def test_gradients_check_grads(x64, key):
  x, y = samples(key, n=6, d=2)
  f = lambda y: monge_gap(x, y, epsilon=0.5, solver=sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=20_000))
  g = jax.grad(f)(y)
  assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
  jax.test_util.check_grads(f, (y,), order=1, modes=("rev",), atol=1e-6, rtol=1e-5, eps=1e-5)


def test_default_solver_is_otts_sinkhorn_with_the_default_kwargs(key):
  """solver=None is ott's Sinkhorn(**DEFAULT_SOLVER_KWARGS): bit for bit the estimator the figures were made with."""
  x, y = samples(key)
  default = monge_gap_output(x, y, epsilon=0.05)
  explicit = monge_gap_output(x, y, epsilon=0.05, solver=sinkhorn.Sinkhorn(**DEFAULT_SOLVER_KWARGS))
  np.testing.assert_array_equal(default.value, explicit.value)
  loose = monge_gap_output(x, y, epsilon=0.05, solver=sinkhorn.Sinkhorn(threshold=1e-1))
  assert float(loose.value) != float(default.value)


@pytest.mark.parametrize(
  "cost_fn, eps",
  [(costs.SqEuclidean(), 0.1), (costs.Euclidean(), 0.05)],
  ids=["SqEuclidean", "Euclidean"],
)
def test_sinkhorn_newton_sparse_as_the_solver(x64, key, cost_fn, eps):
  """The Monge gap with SNS equals the one with ott's Sinkhorn (both run tight), and so does its gradient in the
  mapped points (SNS by implicit differentiation, ott by its own)."""
  x, y = samples(key, n=24, d=2)
  ott_solver = sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=100_000)
  sns_solver = SinkhornNewtonSparse(threshold=1e-12, max_newton_iters=500)
  gap = lambda solver: lambda y: monge_gap_output(x, y, cost_fn=cost_fn, epsilon=eps, solver=solver)
  ours, theirs = jax.jit(gap(sns_solver))(y), jax.jit(gap(ott_solver))(y)
  assert ours.converged and theirs.converged
  np.testing.assert_allclose(ours.value, theirs.value, rtol=1e-9)
  grad_ours = jax.jit(jax.grad(lambda y: gap(sns_solver)(y).value))(y)
  grad_theirs = jax.jit(jax.grad(lambda y: gap(ott_solver)(y).value))(y)
  assert np.linalg.norm(grad_theirs) > 1e-3
  np.testing.assert_allclose(grad_ours, grad_theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
  "x, y, error, match",
  [
    (np.zeros((4, 2)), np.zeros((5, 2)), ValueError, "same shape"),
    (np.zeros(4), np.zeros(4), ValueError, r"\[n, d\]"),
    (np.zeros((4, 2), np.int32), np.zeros((4, 2), np.int32), TypeError, "floating"),
  ],
)
def test_bad_input(x, y, error, match):
  with pytest.raises(error, match=match):
    monge_gap(x, y)


def test_fit_map_takes_an_optimizer_and_a_solver(key):
  """optimizer=None is Adam at DEFAULT_LEARNING_RATE and solver=None ott's Sinkhorn(**TRAINING_SOLVER_KWARGS)."""
  source = lambda k, n: jax.random.normal(k, (n, 2))
  target = lambda k, n: jax.random.normal(k, (n, 2)) + 1.0
  kw = {"num_steps": 2, "batch_size": 8, "hidden": (4,)}
  default = fit_map(key, source, target, **kw)
  explicit = fit_map(
    key,
    source,
    target,
    optimizer=optax.adam(DEFAULT_LEARNING_RATE),
    solver=sinkhorn.Sinkhorn(**TRAINING_SOLVER_KWARGS),
    **kw,
  )
  np.testing.assert_array_equal(default.monge_gap, explicit.monge_gap)
  np.testing.assert_array_equal(default(jnp.ones((3, 2))), explicit(jnp.ones((3, 2))))
  with pytest.raises(TypeError, match="optimizer"):
    fit_map(key, source, target, optimizer=0.1, **kw)


def test_fit_map_displacement_regularizer_is_the_mean_cost_of_the_step(key):
  """The control's regulariser, recorded at step 0, is E‖x - T₀(x)‖² on the step's own batch, redrawn here; with a
  large weight it holds the map near the identity, which the fitting loss alone moves by the target's shift."""
  source = lambda k, n: jax.random.normal(k, (n, 2))
  target = lambda k, n: jax.random.normal(k, (n, 2)) + 1.0
  kw = {"num_steps": 1, "batch_size": 8, "hidden": (4,)}
  fit = fit_map(key, source, target, lambda_mg=0.5, regularizer="displacement", **kw)
  # fit_map's own key schedule: init key, then one step key per step, split into the source and target keys.
  init_key, data_key = jax.random.split(key)
  model = fit.model
  params0 = model.init(init_key, source(init_key, 2))
  kx, _ = jax.random.split(jax.random.split(data_key, 1)[0])
  x = source(kx, 8)
  expected = jnp.mean(jnp.sum((x - model.apply(params0, x)) ** 2, axis=-1))
  np.testing.assert_allclose(fit.monge_gap[0], expected, rtol=1e-5, atol=1e-6)
  long = {"num_steps": 60, "batch_size": 32, "hidden": (8,), "optimizer": optax.adam(1e-2)}
  held = fit_map(key, source, target, lambda_mg=10.0, regularizer="displacement", **long)
  free = fit_map(key, source, target, lambda_mg=0.0, **long)
  x = source(jax.random.key(9), 512)
  moved = lambda f: float(jnp.mean(jnp.sum((f(x) - x) ** 2, axis=-1)))
  assert moved(held) < 0.5 * moved(free)
  # With λ = 0 the regulariser is only recorded: both choices train the same map.
  a = fit_map(key, source, target, lambda_mg=0.0, regularizer="displacement", **kw)
  b = fit_map(key, source, target, lambda_mg=0.0, **kw)
  np.testing.assert_array_equal(a(jnp.ones((3, 2))), b(jnp.ones((3, 2))))
  with pytest.raises(ValueError, match="`regularizer` must be one of"):
    fit_map(key, source, target, regularizer="identity", **kw)


def test_bad_solver(key):
  x, y = samples(key, n=8)
  with pytest.raises(TypeError, match="solver"):
    monge_gap(x, y, solver="sinkhorn")
  # A negative ε used to give a finite (negative) gap.
  for epsilon in (0.0, -0.1):
    with pytest.raises(ValueError, match="`epsilon` must be a finite number > 0"):
      monge_gap(x, y, epsilon=epsilon)


@pytest.mark.parametrize(
  "x, y, kwargs, error, match",
  [
    (np.zeros((0, 2)), np.zeros((0, 2)), {}, ValueError, "`source` must hold n >= 1 samples"),
    (np.zeros((4, 0)), np.zeros((4, 0)), {}, ValueError, "`source` must hold n >= 1 samples of dimension d >= 1"),
    (np.zeros((4, 2)), np.zeros((4, 3)), {}, ValueError, "`source` and `mapped` must pair up"),
    (np.zeros((4, 2)), np.zeros(8), {}, ValueError, "`mapped` must be a \\[n, d\\] array"),
    (np.zeros((4, 2)), np.zeros((4, 2), np.int32), {}, TypeError, "`mapped` must be floating point"),
    (None, None, {"epsilon": 0.0}, ValueError, "`epsilon` must be a finite number > 0"),
    (None, None, {"epsilon": np.nan}, ValueError, "`epsilon` must be a finite number > 0"),
    (None, None, {"relative_epsilon": "median"}, ValueError, "`relative_epsilon` must be None, 'mean' or 'std'"),
    (None, None, {"relative_epsilon": True}, ValueError, "`relative_epsilon` must be None, 'mean' or 'std'"),
    (None, None, {"cost_fn": lambda a, b: jnp.sum((a - b) ** 2)}, TypeError, "`cost_fn` must be an ott cost"),
    (None, None, {"cost_fn": costs.SqEuclidean}, TypeError, "`cost_fn` must be an ott cost"),
    (None, None, {"solver": "sinkhorn"}, TypeError, "`solver` must be a callable"),
  ],
)
def test_monge_gap_output_bad_input(key, x, y, kwargs, error, match):
  if x is None:
    x, y = samples(key, n=8)
  with pytest.raises(error, match=match):
    monge_gap_output(x, y, **kwargs)
