"""Local reduced-order bases (arXiv 2103.13683) against exact identities, Eckart-Young, brute force and scipy."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from toolkit.cluster import rom_cluster as rc
from toolkit.cluster import rom_snapshots as rs


def random_rows(key, n=6, dim=5, dtype=jnp.float32):
  return jax.random.normal(key, (n, dim), dtype)


# ----------------------------------------------------------------------------------------------------------------
# Sine dissimilarity.


def test_projection_error_is_norm_times_sine(key, x64):
  # ‖u − Π_v u‖ = ‖u‖ sin∠(u, v) exactly, including nearly parallel pairs.
  u = random_rows(key, 8, 7, jnp.float64)
  v = jnp.concatenate([random_rows(jax.random.fold_in(key, 1), 4, 7, jnp.float64), u[:4] + 1e-6 * u[4:]])
  sine = rc.sine_dissimilarity(u, v)
  for j in range(v.shape[0]):
    line = (v[j] / jnp.linalg.norm(v[j]))[:, None]
    residual = np.linalg.norm(np.asarray(u) - np.asarray(u) @ np.asarray(line) @ np.asarray(line).T, axis=1)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1) * sine[:, j], residual, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(rc.projection_error(u, line), sine[:, j], rtol=1e-9, atol=1e-15)


def test_sine_dissimilarity_formula_and_invariances(key):
  u = random_rows(key, 6, 5)
  d = rc.sine_dissimilarity(u)
  un = np.asarray(u, np.float64)
  cos = (un @ un.T) / np.outer(np.linalg.norm(un, axis=1), np.linalg.norm(un, axis=1))
  np.testing.assert_allclose(d, np.sqrt(np.clip(1 - cos**2, 0, 1)), atol=2e-6)
  np.testing.assert_array_equal(d, d.T)
  np.testing.assert_array_equal(np.diag(d), 0.0)
  scale = jnp.array([2.0, -1.0, 0.3, -5.0, 1.0, 7.0])[:, None]
  np.testing.assert_allclose(rc.sine_dissimilarity(scale * u), d, atol=5e-6)
  np.testing.assert_allclose(jax.jit(rc.sine_dissimilarity)(u), d, atol=1e-6)


def test_projection_distance_of_lines_is_the_sine(key):
  u = random_rows(key, 4, 6)
  pairwise = rc.grassmann_dissimilarity(u[:, :, None], distance=rc.projection_distance)
  np.testing.assert_allclose(pairwise, rc.sine_dissimilarity(u), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Grassmann distances against scipy.


@pytest.mark.parametrize("ranks", [(3, 2), (2, 3), (3, 3)])
def test_principal_angles_match_scipy(key, x64, ranks):
  a = jax.random.normal(key, (8, ranks[0]), jnp.float64)
  b = jax.random.normal(jax.random.fold_in(key, 1), (8, ranks[1]), jnp.float64)
  b = b.at[:, 0].set(a[:, 0] + 1e-3 * b[:, 0])  # one small angle: the arcsine branch
  expected = scipy.linalg.subspace_angles(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(rc.principal_angles(a, b), expected, rtol=1e-8, atol=1e-12)
  sin = np.sin(expected)
  np.testing.assert_allclose(rc.chordal_distance(a, b), np.sqrt(np.sum(sin**2)), rtol=1e-10)
  np.testing.assert_allclose(rc.projection_distance(a, b), sin.max(), rtol=1e-10)
  np.testing.assert_allclose(rc.geodesic_distance(a, b), np.linalg.norm(expected), rtol=1e-10)


def test_tiny_principal_angle_is_exact(x64):
  # Lines at a known angle θ = 1e-9 (arccos of the cosine would return 0 or ~1.5e-8 here).
  theta = 1e-9
  a = jnp.array([[1.0], [0.0], [0.0]])
  b = jnp.array([[math.cos(theta)], [math.sin(theta)], [0.0]])
  np.testing.assert_allclose(rc.principal_angles(a, b), [theta], rtol=1e-6)
  c = jnp.array([[math.cos(1.2)], [0.0], [math.sin(1.2)]])
  np.testing.assert_allclose(rc.principal_angles(jnp.concatenate([a, b], 1), c), [1.2], rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# POD.


def test_pod_error_is_discarded_singular_values(key, x64):
  u = random_rows(key, 9, 12, jnp.float64)
  s = np.linalg.svd(np.asarray(u), compute_uv=False)
  for n_modes in (1, 3, 6):
    out = rc.pod(u, n_modes)
    np.testing.assert_allclose(out.basis.T @ out.basis, np.eye(n_modes), atol=1e-12)
    err2 = np.sum((rc.projection_error(u, out.basis) * np.linalg.norm(u, axis=1)) ** 2)
    np.testing.assert_allclose(err2, np.sum(s[n_modes:] ** 2), rtol=1e-10)
  assert rc.pod(u[:2], 4).basis.shape == (12, 4)  # fewer snapshots than modes: completed basis


def test_one_cluster_is_global_pod(key, x64):
  u = random_rows(key, 10, 8, jnp.float64)
  local = rc.local_pod(u, jnp.zeros(10, jnp.int32), num_clusters=1, num_modes=3)
  glob = rc.pod(u, 3)
  np.testing.assert_allclose(rc.principal_angles(local.bases[0], glob.basis), 0.0, atol=1e-7)
  np.testing.assert_allclose(local.singular_values[0], glob.singular_values, rtol=1e-12)
  test = random_rows(jax.random.fold_in(key, 1), 5, 8, jnp.float64)
  np.testing.assert_allclose(
    rc.local_projection_error(test, local, jnp.zeros(5, jnp.int32)), rc.projection_error(test, glob.basis), rtol=1e-10
  )
  eta = rc.efficiency_criterion(u, jnp.zeros(10, jnp.int32), num_clusters=1, num_modes=3)
  np.testing.assert_allclose(eta.criterion, 1.0, rtol=1e-10)


def test_local_pod_is_pod_of_each_cluster(key, x64):
  u = random_rows(key, 12, 6, jnp.float64)
  labels = jnp.array([0, 1, 2] * 4)
  local = rc.local_pod(u, labels, num_clusters=3, num_modes=2)
  np.testing.assert_array_equal(local.counts, [4, 4, 4])
  sq_local = 0.0
  for k in range(3):
    sub = u[labels == k]
    np.testing.assert_allclose(rc.principal_angles(local.bases[k], rc.pod(sub, 2).basis), 0.0, atol=1e-7)
    sq_local += np.sum(rc.projection_error(sub, rc.pod(sub, 2).basis) ** 2)
  # The criterion written another way: per-cluster sums of squared normalised errors.
  eta = rc.efficiency_criterion(u, labels, num_clusters=3, num_modes=2)
  glob = np.mean(rc.projection_error(u, rc.pod(u, 2).basis) ** 2)
  np.testing.assert_allclose(eta.criterion, math.sqrt(sq_local / 12) / math.sqrt(glob), rtol=1e-10)
  assert eta.criterion < 1


# ----------------------------------------------------------------------------------------------------------------
# k-medoids.


def brute_force_kmedoids(d, k):
  n = d.shape[0]
  return min(np.sum(np.min(d[:, list(m)], axis=1)) for m in itertools.combinations(range(n), k))


def test_kmedoids_matches_brute_force(key):
  x = jax.random.normal(key, (4, 10, 3))
  for i in range(4):
    d = rc.sine_dissimilarity(x[i])
    out = rc.kmedoids(jax.random.fold_in(key, i), d, 3, num_restarts=4)
    np.testing.assert_allclose(out.cost, brute_force_kmedoids(np.asarray(d, np.float64), 3), rtol=1e-6)
    np.testing.assert_array_equal(out.assignment, np.argmin(np.asarray(d)[:, np.asarray(out.medoids)], axis=1))
    assert bool(out.converged)
  jitted = jax.jit(rc.kmedoids, static_argnames=("num_clusters", "num_restarts"))(
    jax.random.fold_in(key, 3), d, num_clusters=3, num_restarts=4
  )
  np.testing.assert_array_equal(jitted.medoids, out.medoids)
  # Nearest-medoid assignment of the training points is the clustering itself.
  np.testing.assert_array_equal(rc.assign_nearest(x[3], x[3][out.medoids]), out.assignment)


def test_kmedoids_groups_by_line_not_by_scale(key):
  # Three lines, each with short and long snapshots of both signs: sine k-medoids splits by line (cost 0).
  lines = jax.random.normal(key, (3, 3))
  scales = jnp.array([1.0, -3.0, 0.1, 5.0, 2.0, -0.2, 4.0, -6.0, 0.5, -1.0])
  labels = jnp.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
  x = scales[:, None] * lines[labels]
  out = rc.kmedoids(jax.random.key(1), rc.sine_dissimilarity(x), 3, num_restarts=4)
  np.testing.assert_allclose(out.cost, 0.0, atol=1e-5)
  pairs = {(int(a), int(b)) for a, b in zip(labels, out.assignment)}
  assert len(pairs) == 3  # a one-to-one relabelling
  euclid = rc.kmedoids(jax.random.key(1), rc.euclidean_dissimilarity(x), 3, num_restarts=4)
  assert len({(int(a), int(b)) for a, b in zip(labels, euclid.assignment)}) > 3  # Euclidean mixes the lines
  assign = rc.assign_nearest(-7 * lines, x[out.medoids])
  np.testing.assert_array_equal(assign, [dict(pairs)[i] for i in range(3)])


# ----------------------------------------------------------------------------------------------------------------
# PDE snapshots against closed forms.


def test_advection_is_the_exact_shifted_pulse():
  x = rs.periodic_grid(256)
  for t, mu in ((0.1, 0.3), (0.75, 0.6), (1.0, 0.5)):
    u = rs.solve_advection(rs.advection_exact(x, 0.0, mu, 1.5), t, velocity=1.0)
    np.testing.assert_allclose(u, rs.advection_exact(x, t, mu, 1.5), atol=2e-6)
  np.testing.assert_allclose(
    rs.solve_advection(rs.advection_exact(x, 0.0, 0.4), 1.0), rs.advection_exact(x, 0.0, 0.4), atol=2e-6
  )


def test_burgers_matches_cole_hopf_and_conserves_mass():
  x = rs.periodic_grid(128, 2 * math.pi)
  steps = rs.burgers_num_steps(1.0, 128, max_speed=0.2, max_viscosity=0.1)
  u = rs.solve_burgers(rs.burgers_cole_hopf(x, 0.0, 0.1, a=0.6), 1.0, 0.1, num_steps=steps)
  exact = rs.burgers_cole_hopf(x, 1.0, 0.1, a=0.6)
  assert float(jnp.max(jnp.abs(u - exact))) < 1e-3 * float(jnp.max(jnp.abs(exact)))
  # A shock (ν = 1e-3, A = 2, past the breaking time 1/A): the mean is conserved, the solution stays bounded.
  u0 = 2.0 * jnp.sin(x) + 0.3
  u = rs.solve_burgers(u0, 1.0, 1e-3, num_steps=rs.burgers_num_steps(1.0, 128, max_speed=2.3, max_viscosity=1e-3))
  np.testing.assert_allclose(jnp.mean(u), jnp.mean(u0), atol=1e-5)
  assert float(jnp.max(jnp.abs(u))) <= 2.3 + 1e-4  # maximum principle
  assert float(jnp.max(jnp.abs(jnp.diff(u)))) > 0.5  # a steep front has formed


def test_snapshot_generators(key):
  s = rs.burgers_snapshots(key, 4, num_points=64, time=0.3)
  assert s.snapshots.shape == (4, 64) and bool(jnp.all(jnp.isfinite(s.snapshots)))
  amp, nu, scale = np.asarray(s.params).T
  assert np.all((0.5 <= np.abs(scale)) & (np.abs(scale) <= 2.0)) and np.all((1e-3 <= nu) & (nu <= 1e-2))
  steps = rs.burgers_num_steps(0.3, 64, max_speed=2.0, max_viscosity=1e-2)
  direct = rs.solve_burgers(amp[0] * jnp.sin(s.grid), 0.3, nu[0], num_steps=steps)
  np.testing.assert_allclose(s.snapshots[0], scale[0] * direct, rtol=1e-4, atol=1e-5)
  a = rs.advection_snapshots(key, 3, num_points=64, time=0.2)
  np.testing.assert_allclose(a.snapshots, rs.advection_exact(a.grid, 0.2, a.params[:, :1], a.params[:, 1:]), atol=2e-6)


# ----------------------------------------------------------------------------------------------------------------
# jit / vmap and bad input.


def test_jit_and_vmap(key):
  u = random_rows(key, 6, 5)
  basis = rc.pod(u, 2).basis
  np.testing.assert_allclose(jax.jit(rc.projection_error)(u, basis), rc.projection_error(u, basis), rtol=1e-6)
  batched = jax.vmap(rc.projection_error, in_axes=(0, None))(jnp.stack([u, 2 * u]), basis)
  np.testing.assert_allclose(batched[1], batched[0], rtol=1e-6)
  labels = jnp.array([0, 1, 0, 1, 0, 1])
  f = jax.jit(rc.efficiency_criterion, static_argnames=("num_clusters", "num_modes"))
  np.testing.assert_allclose(
    f(u, labels, num_clusters=2, num_modes=1).criterion,
    rc.efficiency_criterion(u, labels, num_clusters=2, num_modes=1).criterion,
    rtol=1e-5,
  )


def test_bad_input(key):
  u = random_rows(key, 6, 5)
  # Clusters outside [0, K) would be dropped by the segment reductions or clamped by indexing without a word.
  with pytest.raises(ValueError, match=r"`assignment` must lie in \[0, 2\), got values in \[0, 5\]"):
    rc.local_pod(u, jnp.array([0, 1, 5, 0, 1, 0]), num_clusters=2, num_modes=1)
  with pytest.raises(ValueError, match=r"`assignment` must lie in \[0, 2\)"):
    rc.local_projection_error(u, jnp.zeros((2, 5, 1)), jnp.array([0, 1, -1, 0, 1, 0]))
  with pytest.raises(ValueError, match="`snapshots` must be a 2-D"):
    rc.sine_dissimilarity(u[0])
  with pytest.raises(TypeError, match="floating dtype"):
    rc.sine_dissimilarity(jnp.ones((3, 2), jnp.int32))
  with pytest.raises(ValueError, match="`others` must have 5 columns"):
    rc.sine_dissimilarity(u, u[:, :3])
  with pytest.raises(ValueError, match="`dissimilarity` must be a square"):
    rc.kmedoids(key, u, 2)
  with pytest.raises(ValueError, match="`num_clusters` must be <= 6"):
    rc.kmedoids(key, rc.sine_dissimilarity(u), 7)
  with pytest.raises(ValueError, match="`num_clusters` must be a Python int >= 1"):
    rc.euclidean_kmeans(key, u, 0)
  with pytest.raises(ValueError, match="`num_modes` must be <= 5"):
    rc.pod(u, 6)
  with pytest.raises(ValueError, match="`assignment` must be an integer array of shape"):
    rc.local_pod(u, jnp.zeros(5, jnp.int32), num_clusters=1, num_modes=1)
  with pytest.raises(ValueError, match="`basis` must be a"):
    rc.projection_error(u, jnp.ones((4, 1)))
  with pytest.raises(ValueError, match="same dim"):
    rc.principal_angles(jnp.ones((4, 2)), jnp.ones((5, 1)))
  with pytest.raises(ValueError, match="`num_steps` must be a Python int"):
    rs.solve_burgers(jnp.ones(8), 1.0, 0.1, num_steps=0)
  with pytest.raises(ValueError, match="`viscosity` must be >= 0"):
    rs.solve_burgers(jnp.ones(8), 1.0, -0.1, num_steps=3)
  with pytest.raises(ValueError, match="`amplitude_range` must be a pair"):
    rs.advection_snapshots(key, 3, amplitude_range=(0.0, 1.0))
  with pytest.raises(ValueError, match="`a` must satisfy"):
    rs.burgers_cole_hopf(jnp.ones(3), 0.0, 0.1, a=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_distances_and_assignment(key):
  u = random_rows(key)
  with pytest.raises(TypeError, match="`dissimilarity` must be a callable"):
    rc.assign_nearest(u, u[:2], dissimilarity="sine")
  with pytest.raises(ValueError, match=r"`references` must be a \(K, 5\) array"):
    rc.assign_nearest(u, u[:2, :3])
  with pytest.raises(ValueError, match=r"`dissimilarity` must return an \(n, K\) = \(6, 2\) matrix"):
    rc.assign_nearest(u, u[:2], dissimilarity=lambda a, b: rc.sine_dissimilarity(b, a))
  with pytest.raises(ValueError, match="`basis_a` and `basis_b` must be 2-D"):
    rc.chordal_distance(jnp.ones((4, 2)), jnp.ones((5, 1)))
  with pytest.raises(ValueError, match="`basis_a` and `basis_b` must be 2-D"):
    rc.geodesic_distance(jnp.ones(4), jnp.ones((4, 1)))
  with pytest.raises(ValueError, match=r"`basis_a` and `basis_b` must have at least one column"):
    rc.projection_distance(jnp.eye(4)[:, :2], jnp.ones((4, 0)))
  with pytest.raises(ValueError, match="`others` must have 5 columns"):
    rc.euclidean_dissimilarity(u, u[:, :3])
  with pytest.raises(TypeError, match="`snapshots` must have a floating dtype"):
    rc.euclidean_dissimilarity(jnp.ones((3, 2), jnp.int32))
  with pytest.raises(ValueError, match="`bases` must be a 3-D"):
    rc.grassmann_dissimilarity(u)
  with pytest.raises(TypeError, match="`distance` must be a callable"):
    rc.grassmann_dissimilarity(u[:, :, None], distance="chordal")
  with pytest.raises(ValueError, match="`num_modes` must be a Python int >= 1"):
    rc.efficiency_criterion(u, jnp.zeros(6, jnp.int32), num_clusters=1, num_modes=0)
  with pytest.raises(ValueError, match="`assignment` must be an integer array of shape"):
    rc.efficiency_criterion(u, jnp.zeros(5, jnp.int32), num_clusters=1, num_modes=1)


@pytest.mark.parametrize(
  ("args", "match"),
  [((1,), "`num_points` must be a Python int >= 2"), ((8.0,), "`num_points`"), ((8, 0.0), "`length` must be > 0")],
)
def test_bad_input_periodic_grid(args, match):
  with pytest.raises(ValueError, match=match):
    rs.periodic_grid(*args)


def test_bad_input_advection():
  x = rs.periodic_grid(16)
  for width in (0.0, -0.1, float("nan")):
    with pytest.raises(ValueError, match="`width` must be > 0"):
      rs.advection_exact(x, 0.0, 0.5, width=width)
  with pytest.raises(ValueError, match="`u0` must have a last axis of >= 2 grid points"):
    rs.solve_advection(jnp.ones(1), 0.1)
  with pytest.raises(TypeError, match="`u0` must have a floating dtype"):
    rs.solve_advection(jnp.ones(16, jnp.int32), 0.1)
  with pytest.raises(ValueError, match="`length` must be > 0"):
    rs.solve_advection(jnp.ones(16), 0.1, length=-1.0)


@pytest.mark.parametrize(
  ("args", "kwargs", "match"),
  [
    ((-1.0, 64), {}, "`time` must be a finite number >= 0"),
    ((float("nan"), 64), {}, "`time`"),
    ((1.0, 2), {}, "`num_points` must be a Python int >= 3"),
    ((1.0, 64), {"max_speed": -2.0}, "`max_speed` must be a finite number >= 0"),
    ((1.0, 64), {"max_viscosity": float("inf")}, "`max_viscosity` must be a finite number >= 0"),
  ],
)
def test_bad_input_burgers_num_steps(args, kwargs, match):
  kwargs = {"max_speed": 2.0, "max_viscosity": 1e-2, **kwargs}
  with pytest.raises(ValueError, match=match):
    rs.burgers_num_steps(*args, **kwargs)


@pytest.mark.parametrize(
  ("num_samples", "kwargs", "match"),
  [
    (0, {}, "`num_samples` must be a Python int >= 1"),
    (3, {"num_points": 4}, "`num_points` must be a Python int >= 8"),
    (3, {"time": 0.0}, "`time` must be > 0"),
    (3, {"viscosity_range": (0.0, 1e-2)}, "`viscosity_range` must be a pair"),
    (3, {"scale_range": (2.0, 1.0)}, "`scale_range` must be a pair"),
    (3, {"amplitude_range": (1.0,)}, "`amplitude_range` must be a pair"),
  ],
)
def test_bad_input_burgers_snapshots(key, num_samples, kwargs, match):
  with pytest.raises(ValueError, match=match):
    rs.burgers_snapshots(key, num_samples, **kwargs)
