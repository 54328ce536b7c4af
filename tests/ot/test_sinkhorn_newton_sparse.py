"""Sinkhorn-Newton-Sparse against ott's Sinkhorn, dense Newton in numpy, the exact assignment; its gradients
against ott's implicit differentiation and finite differences."""

import functools
import itertools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from ott.geometry import geometry, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from scipy.optimize import linear_sum_assignment

from toolkit.ot import SinkhornNewtonSparse, SNSOutput, dual_objective, solve_sinkhorn_newton_sparse
from toolkit.ot import sinkhorn_newton_sparse as sns_lib


def random_problem(key, n, m, eta, uniform=True):
  k1, k2, k3 = jax.random.split(key, 3)
  cost = jax.random.uniform(k1, (n, m))
  a = jnp.full(n, 1.0 / n) if uniform else jax.random.dirichlet(k2, jnp.ones(n) * 5)
  b = jnp.full(m, 1.0 / m) if uniform else jax.random.dirichlet(k3, jnp.ones(m) * 5)
  return linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=1.0 / eta), a=a, b=b)


def ott_reference(prob):
  out = sinkhorn.Sinkhorn(threshold=1e-11, max_iterations=200_000, inner_iterations=10)(prob)
  assert out.converged
  return out


def assert_same_solution(out, ref):
  np.testing.assert_allclose(out.matrix, ref.matrix, atol=1e-9, rtol=0)
  np.testing.assert_allclose(out.ent_reg_cost, ref.ent_reg_cost, rtol=1e-9)
  np.testing.assert_allclose(out.reg_ot_cost, ref.reg_ot_cost, rtol=1e-9)
  # Potentials agree up to the gauge (f + t, g - t).
  shift = jnp.mean(out.f - ref.f)
  np.testing.assert_allclose(out.f - shift, ref.f, atol=1e-8)
  np.testing.assert_allclose(out.g + shift, ref.g, atol=1e-8)


@pytest.mark.parametrize("sparsity", [None, 0.1, 1.0])
def test_matches_ott_sinkhorn_on_a_small_problem(x64, key, sparsity):
  prob = random_problem(key, 60, 60, eta=100)
  out = jax.jit(SinkhornNewtonSparse(sparsity=sparsity, threshold=1e-11))(prob)
  assert out.converged and out.num_newton_iters > 0
  assert_same_solution(out, ott_reference(prob))
  np.testing.assert_allclose(dual_objective(out.f, out.g, prob), out.ent_reg_cost, rtol=1e-10)


def test_too_small_a_budget_falls_back_to_sinkhorn(x64, key):
  """3/n of the entries hold < 99% of the plan's mass here: no Newton step is taken, and Sinkhorn converges."""
  prob = random_problem(key, 60, 60, eta=20)
  out = SinkhornNewtonSparse(sparsity=0.05, threshold=1e-11, max_newton_iters=500)(prob)
  assert out.converged and int(out.num_newton_iters) == 0
  assert float(out.kept_mass[0]) < 0.99
  assert_same_solution(out, ott_reference(prob))


def test_rectangular_non_uniform_marginals(x64, key):
  prob = random_problem(key, 40, 70, eta=80, uniform=False)
  out = solve_sinkhorn_newton_sparse(prob.geom, prob.a, prob.b, threshold=1e-11)
  assert out.converged
  assert_same_solution(out, ott_reference(prob))
  np.testing.assert_allclose(out.matrix.sum(1), prob.a, atol=1e-11)
  np.testing.assert_allclose(out.matrix.sum(0), prob.b, atol=1e-11)


def test_point_cloud_geometry(x64, key):
  x = jax.random.normal(key, (50, 2))
  y = jax.random.normal(jax.random.fold_in(key, 1), (45, 2)) + 1.0
  geom = pointcloud.PointCloud(x, y, epsilon=0.05)
  out = solve_sinkhorn_newton_sparse(geom, num_sinkhorn_iters=200, threshold=1e-10)
  assert out.converged
  assert_same_solution(out, ott_reference(linear_problem.LinearProblem(geom)))


def test_gradient_and_hessian_of_the_lyapunov_potential(x64, key):
  """∇D = (a - P1, b - Pᵀ1) and -∇²D = (1/ε)[[diag(P1), P], [Pᵀ, diag(Pᵀ1)]] (arXiv 2401.12253, Sec. 2)."""
  prob = random_problem(key, 6, 5, eta=10, uniform=False)
  f, g = (
    0.1 * jax.random.normal(key, (6,)),
    0.1 * jax.random.normal(jax.random.fold_in(key, 2), (5,)),
  )
  plan = prob.geom.transport_from_potentials(f, g)
  grad_f, grad_g = jax.grad(dual_objective, argnums=(0, 1))(f, g, prob)
  np.testing.assert_allclose(grad_f, prob.a - plan.sum(1), rtol=1e-12)
  np.testing.assert_allclose(grad_g, prob.b - plan.sum(0), rtol=1e-12)
  z = jnp.concatenate([f, g])
  hess = jax.hessian(lambda z: dual_objective(z[:6], z[6:], prob))(z)
  expected = -(1 / prob.geom.epsilon) * np.block([[np.diag(plan.sum(1)), plan], [plan.T, np.diag(plan.sum(0))]])
  np.testing.assert_allclose(hess, expected, rtol=1e-10, atol=1e-12)


def test_dense_step_equals_newton_with_an_exact_solve(x64, key):
  """With the full Hessian and a tight CG, one SNS step is Newton's step computed with numpy's solver."""
  prob = random_problem(key, 30, 30, eta=50)
  warm = SinkhornNewtonSparse(num_sinkhorn_iters=10, max_newton_iters=0)(prob)
  one = SinkhornNewtonSparse(
    num_sinkhorn_iters=10,
    max_newton_iters=1,
    sparsity=1.0,
    cg_tol=1e-14,
    cg_maxiter=5000,
    threshold=1e-300,
  )(prob)
  f, g = np.asarray(warm.f), np.asarray(warm.g)
  plan = np.asarray(warm.matrix)
  eps = prob.geom.epsilon
  hess = (1 / eps) * np.block([[np.diag(plan.sum(1)), plan], [plan.T, np.diag(plan.sum(0))]])
  grad = np.concatenate([prob.a - plan.sum(1), prob.b - plan.sum(0)])
  step = np.zeros(60)
  step[:-1] = np.linalg.solve(hess[:-1, :-1], grad[:-1])  # gauge: the last g held still
  assert float(one.step_sizes[0]) == 1.0
  np.testing.assert_allclose(one.f, f + step[:30], rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(one.g, g + step[30:], rtol=1e-8, atol=1e-10)


def test_dual_objective_never_decreases(x64, key):
  prob = random_problem(key, 50, 50, eta=1200)
  values = []
  for k in range(8):
    out = SinkhornNewtonSparse(num_sinkhorn_iters=5, max_newton_iters=k, threshold=1e-300)(prob)
    values.append(float(dual_objective(out.f, out.g, prob)))
  # Non-decreasing up to the rounding of D itself (see the line search).
  assert all(b >= a - 1e-14 * abs(a) for a, b in itertools.pairwise(values)), values
  assert values[-1] > values[0]


def test_large_eta_recovers_the_exact_assignment(x64, key):
  """At η = 10⁴ the near-singular Newton systems of the first steps make CG fail; the Sinkhorn fallback carries
  the solver until Newton takes over."""
  prob = random_problem(key, 80, 80, eta=1e4)
  out = jax.jit(SinkhornNewtonSparse(threshold=1e-9, max_newton_iters=1000))(prob)
  assert out.converged and int(out.num_newton_iters) > 0
  cost = np.asarray(prob.geom.cost_matrix)
  rows, cols = linear_sum_assignment(cost)
  np.testing.assert_array_equal(np.argmax(np.asarray(out.matrix), axis=1)[rows], cols)
  # The entropic cost is within 2 ε log n of the assignment's (each entropy term is at most log n).
  assert abs(float(out.primal_cost) - cost[rows, cols].mean()) <= 2 * prob.geom.epsilon * np.log(80)


def test_float32_at_eta_1200_has_no_nan(key):
  prob = random_problem(key, 100, 100, eta=1200)
  out = jax.jit(SinkhornNewtonSparse(threshold=1e-4))(prob)
  assert out.f.dtype == jnp.float32
  assert np.all(np.isfinite(out.f)) and np.all(np.isfinite(out.g)) and np.isfinite(out.ent_reg_cost)
  assert float(np.asarray(out.errors)[np.asarray(out.errors) >= 0][-1]) < 1e-3


def test_jit_and_eager_agree(x64, key):
  prob = random_problem(key, 40, 40, eta=200)
  solver = SinkhornNewtonSparse(threshold=1e-10)
  eager, jitted = solver(prob), jax.jit(solver)(prob)
  np.testing.assert_allclose(eager.f, jitted.f, atol=1e-12)
  assert int(eager.num_newton_iters) == int(jitted.num_newton_iters)


# ---------------------------------------------------------------------------------------------------------------
# Differentiation: implicit, at the fixed point.

TIGHT_SNS = SinkhornNewtonSparse(threshold=1e-12, max_newton_iters=500)
TIGHT_OTT = sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=200_000, inner_iterations=10)


def point_clouds(key, n=30, m=25):
  kx, ky = jax.random.split(key)
  return jax.random.normal(kx, (n, 2)), jax.random.normal(ky, (m, 2)) * 0.8 + 0.5


def entropic_cost(solver, x, y, a=None, b=None, epsilon=0.1):
  out = solver(linear_problem.LinearProblem(pointcloud.PointCloud(x, y, epsilon=epsilon), a=a, b=b))
  return out.ent_reg_cost


def test_gradient_wrt_points_equals_otts(x64, key):
  """∇_x, ∇_y of the entropic cost through SNS = through ott's Sinkhorn (implicit differentiation, run tight)."""
  x, y = point_clouds(key)
  grads = {}
  for name, solver in (("sns", TIGHT_SNS), ("ott", TIGHT_OTT)):
    cost = functools.partial(entropic_cost, solver)
    value, grads[name] = jax.jit(jax.value_and_grad(cost, argnums=(0, 1)))(x, y)
    assert np.isfinite(value)
  for ours, theirs in zip(grads["sns"], grads["ott"]):
    assert np.linalg.norm(theirs) > 1e-2
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_gradient_wrt_marginal_weights_equals_otts(x64, key):
  """Through a = softmax(α), b = softmax(β) (balanced for every α, β): ∇_α, ∇_β through SNS = through ott."""
  x, y = point_clouds(key, 20, 15)
  ka, kb = jax.random.split(jax.random.fold_in(key, 1))
  alpha, beta = jax.random.normal(ka, (20,)), jax.random.normal(kb, (15,))

  def loss(solver):
    return lambda alpha, beta: entropic_cost(solver, x, y, jax.nn.softmax(alpha), jax.nn.softmax(beta))

  ours = jax.jit(jax.grad(loss(TIGHT_SNS), argnums=(0, 1)))(alpha, beta)
  theirs = jax.jit(jax.grad(loss(TIGHT_OTT), argnums=(0, 1)))(alpha, beta)
  for g_ours, g_theirs in zip(ours, theirs):
    assert np.linalg.norm(g_theirs) > 1e-3
    np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-12)
  # The raw gradients in (a, b) agree along every direction that keeps the problem balanced: up to (c·1, -c·1).
  a, b = jax.nn.softmax(alpha), jax.nn.softmax(beta)
  raw = {
    name: jax.grad(functools.partial(entropic_cost, solver, x, y), argnums=(0, 1))(a, b)
    for name, solver in (("sns", TIGHT_SNS), ("ott", TIGHT_OTT))
  }
  shift = jnp.mean(raw["sns"][0] - raw["ott"][0])
  np.testing.assert_allclose(raw["sns"][0] - shift, raw["ott"][0], rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(raw["sns"][1] + shift, raw["ott"][1], rtol=1e-6, atol=1e-9)


def test_gradient_of_the_plan_through_a_cost_matrix_equals_otts(x64, key):
  """A loss of the plan itself (where the implicit part carries the gradient) in a dense cost matrix."""
  prob = random_problem(key, 12, 10, eta=20, uniform=False)
  weights = jax.random.normal(jax.random.fold_in(key, 3), (12, 10))

  def loss(solver):
    def f(cost):
      geom = geometry.Geometry(cost_matrix=cost, epsilon=prob.geom.epsilon)
      return jnp.sum(solver(linear_problem.LinearProblem(geom, a=prob.a, b=prob.b)).matrix * weights)

    return f

  cost = prob.geom.cost_matrix
  ours, theirs = jax.grad(loss(TIGHT_SNS))(cost), jax.grad(loss(TIGHT_OTT))(cost)
  assert np.linalg.norm(theirs) > 1e-2
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-10)


def test_check_grads_on_a_small_problem(x64, key):
  """Reverse mode against finite differences: the entropic cost, and a loss of the plan, in the points."""
  x, y = point_clouds(key, 6, 5)
  solver = SinkhornNewtonSparse(threshold=1e-13, max_newton_iters=200)
  weights = jax.random.normal(jax.random.fold_in(key, 2), (6, 5))

  def plan_loss(x, y):
    prob = linear_problem.LinearProblem(pointcloud.PointCloud(x, y, epsilon=0.5))
    return jnp.sum(solver(prob).matrix * weights)

  cost = lambda x, y: entropic_cost(solver, x, y, epsilon=0.5)
  for f in (cost, plan_loss):
    jax.test_util.check_grads(f, (x, y), order=1, modes=("rev",), atol=1e-6, rtol=1e-5, eps=1e-5)


def test_output_under_grad_vmap_and_jit(key):
  """The output is an ott-like pytree; gradients go through jit and vmap (float32)."""
  xs = jax.random.normal(key, (3, 10, 2))
  y = jax.random.normal(jax.random.fold_in(key, 1), (8, 2))
  solver = SinkhornNewtonSparse(threshold=1e-5)
  grads = jax.jit(jax.vmap(jax.grad(lambda x: entropic_cost(solver, x, y))))(xs)
  assert grads.shape == (3, 10, 2) and np.all(np.isfinite(grads))
  out = solver(linear_problem.LinearProblem(pointcloud.PointCloud(xs[0], y, epsilon=0.1)))
  assert isinstance(out, SNSOutput) and out.converged
  np.testing.assert_allclose(out.apply(jnp.ones(10), axis=0), out.matrix.sum(0), rtol=1e-5)
  np.testing.assert_allclose(out.a, jnp.full(10, 0.1))
  assert int(out.n_iters) == int(out.num_sinkhorn_iters) + int(out.num_newton_iters)


def test_bad_input_raises_clear_errors(key):
  geom = geometry.Geometry(cost_matrix=jnp.ones((3, 4)), epsilon=0.1)
  with pytest.raises(ValueError, match="same mass"):
    solve_sinkhorn_newton_sparse(geom, jnp.full(3, 1 / 3), jnp.full(4, 0.5))
  with pytest.raises(TypeError, match="Geometry"):
    solve_sinkhorn_newton_sparse(jnp.ones((3, 3)))
  with pytest.raises(ValueError, match="sparsity"):
    SinkhornNewtonSparse(sparsity=0.0)
  with pytest.raises(ValueError, match="balanced"):
    SinkhornNewtonSparse()(linear_problem.LinearProblem(geom, tau_a=0.5))
  # ε ≤ 0 used to return f = g = 0 (ε = 0) or finite garbage (ε < 0); a negative marginal a NaN cost.
  for epsilon in (0.0, -1.0):
    with pytest.raises(ValueError, match="`epsilon` must be > 0"):
      solve_sinkhorn_newton_sparse(geometry.Geometry(cost_matrix=jnp.ones((3, 4)), epsilon=epsilon))
  with pytest.raises(ValueError, match="marginal `a` must be finite and non-negative"):
    solve_sinkhorn_newton_sparse(geom, jnp.array([0.5, 0.6, -0.1]), jnp.full(4, 0.25))


def test_unequal_masses_under_jit_do_not_count_as_converged(key):
  x = jax.random.normal(key, (12, 2))
  solve = jax.jit(lambda a, b: solve_sinkhorn_newton_sparse(pointcloud.PointCloud(x, x + 0.5, epsilon=0.1), a, b))
  a = jnp.full(12, 1 / 12)
  assert bool(solve(a, a).converged)
  assert not bool(solve(a, 1.5 * a).converged)


def test_the_default_threshold_is_reachable_in_float32(key):
  # A fixed 1e-8 is below float32's rounding floor: the solver ran all its iterations and said converged=False.
  x = jax.random.normal(key, (40, 2))
  out = solve_sinkhorn_newton_sparse(pointcloud.PointCloud(x, x + 0.5, epsilon=0.05))
  assert out.threshold == pytest.approx(1e-5) and bool(out.converged)
  assert int(out.num_newton_iters) < SinkhornNewtonSparse().max_newton_iters


def test_potential_functions_bad_input(key):
  prob = random_problem(key, 5, 4, eta=10)
  f, g = jnp.zeros(5), jnp.zeros(4)
  with pytest.raises(ValueError, match="`f` must be a floating \\(5,\\) potential"):
    sns_lib.dual_objective(jnp.zeros(4), g, prob)
  with pytest.raises(ValueError, match="`g` must be a floating \\(4,\\)"):
    sns_lib.marginal_error(f, jnp.zeros((4, 1)), prob)
  with pytest.raises(ValueError, match="`f` must be a floating"):
    sns_lib.first_order_conditions(jnp.zeros(5, jnp.int32), g, prob)
  with pytest.raises(TypeError, match="`prob` must be an ott LinearProblem"):
    sns_lib.dual_objective(f, g, prob.geom)
  with pytest.raises(TypeError, match="`prob` must be an ott LinearProblem"):
    sns_lib.marginal_error(f, g, None)
  with pytest.raises(ValueError, match="`g` must be a floating"):
    sns_lib.first_order_conditions(f, jnp.zeros(5), prob)


def test_solve_bad_input(key):
  geom = geometry.Geometry(cost_matrix=jnp.ones((3, 4)), epsilon=0.1)
  with pytest.raises(TypeError, match="`geom` must be an ott Geometry"):
    sns_lib.solve(jnp.ones((3, 4)))
  with pytest.raises(ValueError, match="`mass_tolerance` must lie in \\[0, 1\\)"):
    sns_lib.solve(geom, mass_tolerance=1.0)
  with pytest.raises(ValueError, match="`forcing` must lie in \\(0, 1\\)"):
    sns_lib.solve(geom, forcing=0.0)
  with pytest.raises(ValueError, match="marginal `b` must be finite and non-negative"):
    sns_lib.solve(geom, jnp.full(3, 1 / 3), jnp.array([0.5, jnp.nan, 0.25, 0.25]))


@pytest.mark.parametrize("tolerance", [1e-2, 1e-6])
def test_mass_tolerance_keeps_the_fewest_entries_holding_the_mass(x64, key, tolerance):
  """The adaptive rule against a sort: the count kept is the smallest k whose k largest entries hold 1 - δ."""
  log_plan = jax.random.normal(key, (30, 40)) * 3.0
  rows, cols, values, kept, count = sns_lib._sparsify(log_plan, budget=1200, mass_tolerance=tolerance)
  mass = np.sort(np.exp(np.asarray(log_plan)).ravel())[::-1]
  smallest = int(np.searchsorted(np.cumsum(mass) / mass.sum(), 1 - tolerance) + 1)
  assert int(count) == smallest
  np.testing.assert_allclose(np.sort(np.asarray(values)[: int(count)])[::-1], mass[:smallest], rtol=1e-12)
  assert float(kept) >= 1 - tolerance
  np.testing.assert_array_equal(np.asarray(log_plan)[rows[: int(count)], cols[: int(count)]] > -np.inf, True)
  # A budget below that count wins: the largest `budget` entries.
  _, _, values, _, count = sns_lib._sparsify(log_plan, budget=smallest // 2, mass_tolerance=tolerance)
  assert int(count) == smallest // 2
  np.testing.assert_allclose(np.sort(np.asarray(values))[::-1], mass[: smallest // 2], rtol=1e-12)


def test_adaptive_inexact_solver_matches_ott_and_reports_what_it_kept(x64, key):
  prob = random_problem(key, 60, 60, eta=100)
  out = jax.jit(SinkhornNewtonSparse(sparsity=0.5, mass_tolerance=1e-6, forcing=0.1, threshold=1e-11))(prob)
  assert out.converged and int(out.num_newton_iters) > 0
  assert_same_solution(out, ott_reference(prob))
  newton = np.asarray(out.step_sizes) > 0
  kept = np.asarray(out.kept_entries)[newton]
  # Fewer entries than the budget of 1800, holding all but 1e-6 of the mass at each step.
  assert np.all(kept < 1800) and np.all(np.asarray(out.kept_mass)[newton] >= 1 - 1e-6)


def test_plan_agrees_with_regots_safe_and_sparse_newton(x64, key):
  """An independent C++ implementation (regot's SSNS, Qiu and Tang) solves the same problem to the same plan."""
  regot = pytest.importorskip("regot")
  prob = random_problem(key, 80, 70, eta=300, uniform=False)
  out = SinkhornNewtonSparse(threshold=1e-11, mass_tolerance=1e-6, sparsity=0.5, forcing=0.1)(prob)
  cost = np.asfortranarray(np.asarray(prob.geom.cost_matrix))
  ref = regot.sinkhorn_ssns(cost, np.asarray(prob.a), np.asarray(prob.b), 1 / 300, tol=1e-11, max_iter=500)
  assert out.converged and np.asarray(ref.mar_errs)[-1] < 1e-11
  np.testing.assert_allclose(np.asarray(out.matrix), np.asarray(ref.plan), atol=1e-10, rtol=0)
  # regot's objective <P, C> + ε Σ P log P is ott's ent_reg_cost.
  np.testing.assert_allclose(
    float(out.ent_reg_cost), np.sum(ref.plan * cost) + np.sum(ref.plan * np.log(ref.plan)) / 300, rtol=1e-9
  )
