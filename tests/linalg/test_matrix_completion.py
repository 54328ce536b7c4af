"""Alternating minimisation for matrix completion against lstsq, jax.scipy's CG, numpy's SVD and exact recovery."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.linalg import completion_data as cd
from toolkit.linalg import matrix_completion as mc


def random_regressions(seed, num_targets=7, num_design=12, k=3, min_count=4, max_count=9):
  """A batch of regressions with 4..9 entries each (>= k, so each has a unique solution), as Entries."""
  rng = np.random.default_rng(seed)
  counts = rng.integers(min_count, max_count + 1, num_targets)
  target = np.repeat(np.arange(num_targets), counts)
  design_idx = np.concatenate([rng.choice(num_design, c, replace=False) for c in counts])
  design = rng.normal(size=(num_design, k))
  value = rng.normal(size=target.size)
  entries = mc.Entries(jnp.asarray(target, jnp.int32), jnp.asarray(design_idx, jnp.int32), jnp.asarray(value))
  return jnp.asarray(design), entries


def lstsq_per_target(design, entries, num_targets):
  design, target = np.asarray(design), np.asarray(entries.target)
  idx, value = np.asarray(entries.design), np.asarray(entries.value)
  return np.stack(
    [np.linalg.lstsq(design[idx[target == t]], value[target == t], rcond=None)[0] for t in range(num_targets)]
  )


def test_exact_half_step_is_lstsq_per_column(x64):
  design, entries = random_regressions(0)
  out = mc.solve_exact(None, design, entries, jnp.zeros((7, 3)))
  np.testing.assert_allclose(out, lstsq_per_target(design, entries, 7), rtol=1e-9, atol=1e-10)


def test_exact_half_step_chunked_gram(x64, monkeypatch):
  """The Gram matrices accumulated over many small chunks (with a padded last chunk) are the same."""
  design, entries = random_regressions(1)
  full = mc.normal_equations(design, entries, 7)
  monkeypatch.setattr(mc, "_GRAM_CHUNK_FLOATS", 9 * 5)  # chunks of 5 entries, the last one padded
  chunked = mc.normal_equations(design, entries, 7)
  np.testing.assert_allclose(chunked[0], full[0], rtol=1e-12)
  np.testing.assert_allclose(chunked[1], full[1], rtol=1e-12)


def test_empty_regression_gives_zeros(x64):
  design, entries = random_regressions(2, num_targets=3)
  init = jnp.ones((5, 3))  # targets 3 and 4 have no entry
  for solver in (mc.solve_exact, mc.CGSolver(4)):
    out = solver(None, design, entries, init)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[3:], 0.0)


@pytest.mark.parametrize("num_iterations", [1, 2, 3])
def test_cg_equals_jax_scipy_cg_per_target(x64, num_iterations):
  """Our batched CG is jax.scipy.sparse.linalg.cg run on each regression's normal equations separately."""
  design, entries = random_regressions(3)
  x0 = jax.random.normal(jax.random.key(0), (7, 3), jnp.float64)
  ours = mc.solve_cg(None, design, entries, x0, num_iterations=num_iterations)
  d, t, idx, val = (np.asarray(a) for a in (design, entries.target, entries.design, entries.value))
  for j in range(7):
    a = d[idx[t == j]]
    gram, rhs = jnp.asarray(a.T @ a), jnp.asarray(a.T @ val[t == j])
    diag = jnp.diag(gram)
    ref, _ = jax.scipy.sparse.linalg.cg(
      lambda x, g=gram: g @ x, rhs, x0=x0[j], tol=0.0, maxiter=num_iterations, M=lambda x, dg=diag: x / dg
    )
    np.testing.assert_allclose(ours[j], ref, rtol=1e-9, atol=1e-12)


def test_cg_converges_to_exact_as_iterations_grow(x64):
  design, entries = random_regressions(4, k=5, min_count=8, max_count=12)
  exact = mc.solve_exact(None, design, entries, jnp.zeros((7, 5)))
  errors = [
    float(jnp.max(jnp.abs(mc.solve_cg(None, design, entries, jnp.zeros((7, 5)), num_iterations=i) - exact)))
    for i in (0, 1, 2, 3, 5)
  ]
  assert all(b < a for a, b in itertools.pairwise(errors)), errors
  assert errors[-1] < 1e-10  # CG is exact after k = 5 steps in exact arithmetic


def test_warm_start_at_the_solution_stays_there(x64):
  design, entries = random_regressions(5)
  exact = mc.solve_exact(None, design, entries, jnp.zeros((7, 3)))
  np.testing.assert_allclose(mc.CGSolver(2)(None, design, entries, exact), exact, atol=1e-12)
  cold = mc.CGSolver(1, warm_start=False)(None, design, entries, exact)
  assert float(jnp.max(jnp.abs(cold - exact))) > 1e-3


def test_top_singular_subspace_matches_numpy_svd(x64):
  rng = np.random.default_rng(0)
  m, n, k = 40, 30, 3
  dense = rng.normal(size=(m, k)) @ np.diag([10.0, 6.0, 4.0]) @ rng.normal(size=(k, n)) + 0.3 * rng.normal(size=(m, n))
  rows, cols = np.nonzero(rng.random((m, n)) < 0.7)
  obs = mc.prepare(rows, cols, dense[rows, cols], (m, n))
  sparse = np.zeros((m, n))
  sparse[rows, cols] = dense[rows, cols]
  u_ref, s_ref, _ = np.linalg.svd(sparse)
  u, s, _vt = mc.top_singular_subspace(jax.random.key(0), obs, (m, n), k, num_power_iterations=30)
  np.testing.assert_allclose(s, s_ref[:k], rtol=1e-8)
  assert float(cd.subspace_distance(u, jnp.asarray(u_ref[:, :k]))) < 1e-8
  np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-12)


@pytest.mark.parametrize("incoherence", [None, 0.6])
def test_init_is_the_clipped_top_k_svd(x64, incoherence):
  prob = cd.make_problem(jax.random.key(1), (40, 30), 3, 700, dtype=jnp.float64)
  obs = mc.prepare(prob.rows, prob.cols, prob.values, (40, 30))
  state = mc.init(jax.random.key(0), obs, (40, 30), rank=3, incoherence=incoherence, num_power_iterations=30)
  sparse = np.zeros((40, 30))
  sparse[np.asarray(prob.rows), np.asarray(prob.cols)] = np.asarray(prob.values)
  u_ref = np.linalg.svd(sparse)[0][:, :3]
  if incoherence is not None:  # JNS13: zero the entries above 2μ√(k/m); some are clipped at μ = 0.6
    big = np.abs(u_ref) > 2 * incoherence * np.sqrt(3 / 40)
    assert 0 < big.sum() < big.size
    u_ref = np.where(big, 0.0, u_ref)
  u_ref = np.linalg.qr(u_ref)[0]
  assert float(cd.subspace_distance(state.u, jnp.asarray(u_ref))) < 1e-8
  p = 700 / (40 * 30)
  np.testing.assert_allclose(state.v, sparse.T @ np.asarray(state.u) / p, rtol=1e-10)


@pytest.mark.parametrize("solver", ["exact", "approx"])
def test_full_observation_recovers_low_rank_exactly(x64, solver):
  mat = cd.random_low_rank(jax.random.key(2), (25, 20), 4, condition_number=5.0, dtype=jnp.float64)
  rows, cols = (a.ravel() for a in jnp.meshgrid(jnp.arange(25), jnp.arange(20), indexing="ij"))
  out = mc.complete(
    jax.random.key(0), rows, cols, mat.entries(rows, cols), (25, 20), rank=4, num_iterations=3, solver=solver
  )
  assert float(cd.relative_error(out.u, out.v, mat)) < 1e-12
  np.testing.assert_allclose(out.u.T @ out.u, np.eye(4), atol=1e-12)
  assert float(out.residuals[-1]) < 1e-12


@pytest.mark.slow
def test_partial_observation_recovers(x64):
  """Exact and warm-started CG half-steps recover M from 50% of its entries; 1 cold CG step stalls."""
  prob = cd.make_problem(jax.random.key(3), (60, 50), 3, 1500, dtype=jnp.float64)

  def error(**kw):
    out = mc.complete(jax.random.key(0), prob.rows, prob.cols, prob.values, (60, 50), rank=3, num_iterations=25, **kw)
    return float(cd.relative_error(out.u, out.v, prob.matrix))

  assert error(solver="exact") < 1e-7
  assert error(solver="approx") < 1e-7
  assert error(num_cg_iterations=1, warm_start=False) > 1e-4


def small_problem(dtype=jnp.float32):
  return cd.make_problem(jax.random.key(4), (30, 24), 2, 400, dtype=dtype)


def test_complete_is_init_then_steps_bit_for_bit_and_jit_equals_no_jit():
  prob = small_problem()
  out = mc.complete(jax.random.key(7), prob.rows, prob.cols, prob.values, (30, 24), rank=2, num_iterations=3)
  obs = mc.prepare(prob.rows, prob.cols, prob.values, (30, 24))
  k_init, k_steps = jax.random.split(jax.random.key(7))
  init = jax.jit(lambda k: mc.init(k, obs, (30, 24), rank=2))
  state = init(k_init)
  np.testing.assert_array_equal(state.u, out.init_u)
  step = jax.jit(lambda k, s: mc.step(k, s, obs, solver=mc.CGSolver(3)))
  keys = jax.random.split(k_steps, 3)
  with jax.disable_jit():
    eager_step = mc.step(keys[0], state, obs, solver=mc.CGSolver(3))
  residuals = []
  for i, k in enumerate(keys):
    state, info = step(k, state)
    if i == 0:
      for a, b in zip(jax.tree.leaves(eager_step), jax.tree.leaves((state, info))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    residuals.append(info.residual)
  np.testing.assert_array_equal(state.u, out.u)
  np.testing.assert_array_equal(state.v, out.v)
  # The residual is fused differently inside and outside the scan: equal to rounding.
  np.testing.assert_allclose(jnp.stack(residuals), out.residuals, rtol=1e-6)


def test_vmap_over_values_equals_loop():
  prob = small_problem()
  batch = jnp.stack([prob.values, 2.0 * prob.values - 0.1])

  def run(values):
    return mc.complete(jax.random.key(0), prob.rows, prob.cols, values, (30, 24), rank=2, num_iterations=3)

  batched = jax.vmap(run)(batch)
  for i in range(2):
    single = run(batch[i])
    np.testing.assert_allclose(batched.u[i] @ batched.v[i].T, single.u @ single.v.T, rtol=1e-4, atol=1e-5)


def test_a_custom_solver_plugs_in():
  prob = small_problem()
  calls = []

  def solver(key, design, entries, init):
    calls.append(init.shape)
    return mc.CGSolver(3)(key, design, entries, init)

  run = functools.partial(mc.complete, jax.random.key(7), prob.rows, prob.cols, prob.values, (30, 24), rank=2)
  out, ref = run(num_iterations=3, solver=solver), run(num_iterations=3)
  assert (24, 2) in calls and (30, 2) in calls  # traced once per half-step
  np.testing.assert_array_equal(out.u, ref.u)
  np.testing.assert_array_equal(out.v, ref.v)


def test_bad_input():
  prob = small_problem()
  args = (prob.rows, prob.cols, prob.values)
  kw = {"rank": 2, "num_iterations": 2}
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="`rows` must lie in"):
    mc.complete(key, prob.rows.at[0].set(30), prob.cols, prob.values, (30, 24), **kw)
  with pytest.raises(ValueError, match="`cols` must lie in"):
    mc.complete(key, prob.rows, prob.cols.at[3].set(-1), prob.values, (30, 24), **kw)
  with pytest.raises(ValueError, match="`rank` must be"):
    mc.complete(key, *args, (30, 24), rank=25, num_iterations=2)
  with pytest.raises(ValueError, match="same length"):
    mc.complete(key, prob.rows, prob.cols, prob.values[:-1], (30, 24), **kw)
  with pytest.raises(ValueError, match="`shape` must be"):
    mc.complete(key, *args, (30.0, 24), **kw)
  with pytest.raises(TypeError, match="`rows` must hold integers"):
    mc.complete(key, prob.rows.astype(jnp.float32), prob.cols, prob.values, (30, 24), **kw)
  with pytest.raises(TypeError, match="`values` must be a floating"):
    mc.complete(key, prob.rows, prob.cols, prob.rows, (30, 24), **kw)
  with pytest.raises(ValueError, match="`solver` must be"):
    mc.complete(key, *args, (30, 24), solver="cholesky", **kw)
  with pytest.raises(ValueError, match="`num_iterations` must be"):
    mc.complete(key, *args, (30, 24), rank=2, num_iterations=-1)
  with pytest.raises(ValueError, match="`num_iterations` must be"):
    mc.CGSolver(num_iterations=1.5)
  with pytest.raises(ValueError, match="`incoherence` must be"):
    mc.complete(key, *args, (30, 24), incoherence=0.0, **kw)
  with pytest.raises(ValueError, match="`values` must be finite, got 1 non-finite"):
    mc.prepare(prob.rows, prob.cols, prob.values.at[2].set(jnp.nan), (30, 24))
  # Observations prepared for another shape would lose their out-of-range entries in the segment sums.
  with pytest.raises(ValueError, match="`observations` index rows up to 29, outside `shape`"):
    mc.init(key, mc.prepare(*args, (30, 24)), (20, 24), rank=2)


def test_bad_input_half_step_solvers():
  design, entries = random_regressions(0)
  init = jnp.zeros((7, 3))
  for solve in (mc.solve_exact, mc.solve_cg):
    with pytest.raises(ValueError, match="`init` must be \\(q >= 1, k\\) with k = 3"):
      solve(None, design, entries, jnp.zeros((7, 2)))
    with pytest.raises(ValueError, match="`design` must be a \\(p, k\\) factor"):
      solve(None, design[:, 0], entries, init)
    with pytest.raises(ValueError, match="`entries` must be an Entries"):
      solve(None, design, entries._replace(value=entries.value[:-1]), init)
    # Design rows past the factor would be clamped to its last row; targets past init dropped.
    with pytest.raises(ValueError, match="`entries.design` must lie in \\[0, 12\\) \\(the rows of `design`\\)"):
      solve(None, design, entries._replace(design=entries.design.at[0].set(12)), init)
    with pytest.raises(ValueError, match="`entries.target` must lie in \\[0, 6\\) \\(the regressions\\)"):
      solve(None, design, entries, init[:6])
  with pytest.raises(ValueError, match="`init` must be \\(q >= 1, k\\)"):
    mc.solve_exact(None, design, entries, jnp.zeros((0, 3)))
  with pytest.raises(ValueError, match="`num_iterations` must be an int >= 0"):
    mc.solve_cg(None, design, entries, init, num_iterations=-1)
  with pytest.raises(ValueError, match="`num_targets` must be an int >= 1"):
    mc.normal_equations(design, entries, 0)
  with pytest.raises(ValueError, match="`entries.target` must lie in \\[0, 5\\) \\(the regressions\\)"):
    mc.normal_equations(design, entries, 5)
  with pytest.raises(ValueError, match="`entries` must be an Entries"):
    mc.normal_equations(design, tuple(entries), 7)


def test_bad_input_step_residual_and_subspace():
  prob = small_problem()
  obs = mc.prepare(prob.rows, prob.cols, prob.values, (30, 24))
  state = mc.init(jax.random.key(0), obs, (30, 24), rank=2)
  small = mc.AltMinState(u=state.u[:20], v=state.v)  # for a 20 x 24 matrix: rows of Ω would fall outside
  with pytest.raises(ValueError, match="`observations` index rows up to 29, outside the shape of `state`"):
    mc.relative_residual(small, obs)
  with pytest.raises(ValueError, match="`observations` index rows up to 29, outside the shape of `state`"):
    mc.step(jax.random.key(0), small, obs, solver=mc.solve_exact)
  with pytest.raises(ValueError, match="`state` must hold factors u \\(m, k\\) and v \\(n, k\\) of one rank"):
    mc.relative_residual(mc.AltMinState(u=state.u, v=state.v[:, :1]), obs)
  with pytest.raises(TypeError, match="`state` must be an AltMinState"):
    mc.step(jax.random.key(0), (state.u, state.v), obs, solver=mc.solve_exact)
  with pytest.raises(TypeError, match="`observations` must be an Observations"):
    mc.relative_residual(state, obs.by_row)
  with pytest.raises(TypeError, match="`solver` must be a HalfStepSolver callable"):
    mc.step(jax.random.key(0), state, obs, solver="exact")
  with pytest.raises(ValueError, match="`rank` must be a Python int with 1 <= rank <= min\\(shape\\) = 24"):
    mc.top_singular_subspace(jax.random.key(0), obs, (30, 24), 0)
  with pytest.raises(ValueError, match="`oversampling` must be an int >= 0"):
    mc.top_singular_subspace(jax.random.key(0), obs, (30, 24), 2, oversampling=-1)
  with pytest.raises(ValueError, match="`shape` must be a pair"):
    mc.top_singular_subspace(jax.random.key(0), obs, (30,), 2)
  with pytest.raises(ValueError, match="`observations` index columns up to 23, outside `shape` = \\(30, 20\\)"):
    mc.top_singular_subspace(jax.random.key(0), obs, (30, 20), 2)
