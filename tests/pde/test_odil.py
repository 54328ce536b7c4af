"""GliODIL's discrete loss: zero on a Crank–Nicolson solution, its gradient, the optimisers, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.pde import odil
from toolkit.pde import tumour_growth as tg

D_WHITE, RATIO, RHO, DURATION, SPACING = 0.6, 12.0, 0.25, 4.0, 1.0


def _problem(shape=(10, 10), num_steps=6, seed_width=2.0):
  """A forward-simulated patient on ``shape`` (mixed tissue), its scan (labels + PET) and the true unknowns."""
  # White matter fading along the first axis into grey matter, and one CSF cell in a corner.
  ramp = (jnp.arange(shape[0]) + 0.5) / shape[0]
  white = jnp.broadcast_to(0.95 - 0.7 * ramp.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(float)
  csf = jnp.zeros(shape).at[(0,) * len(shape)].set(1.0 - white[(0,) * len(shape)])
  tissue = tg.TissueMaps(white, 1 - white - csf, csf)
  centre = jnp.asarray([n / 2 * SPACING for n in shape], tissue.white.dtype)
  seed = odil.TumourSeed(0.8, seed_width)
  u0 = tg.gaussian_seed(shape, centre, SPACING, amplitude=seed.amplitude, width=seed.width)
  faces = tg.diffusion_faces(tissue, D_WHITE, RATIO)
  tol = 1e-13 if tissue.white.dtype == jnp.float64 else 1e-6
  u = tg.simulate(u0, faces, RHO, duration=DURATION, num_steps=num_steps, spacing=SPACING, cg_tol=tol)
  labels = tg.segment(u[-1], 0.25, 0.6)
  scan = odil.TumourScan(tissue, labels, tg.pet_signal(u[-1], labels), DURATION, SPACING)
  truth = odil.make_params(D_WHITE, RHO, RATIO, centre, theta_down=0.25, theta_up=0.6)
  return scan, u, truth, seed


@pytest.mark.parametrize("shape", [(10, 10), (6, 6, 6)])
def test_residual_of_forward_solution_is_zero(x64, shape):
  scan, u, truth, seed = _problem(shape)
  r = odil.pde_residual(u, scan.tissue, D_WHITE, RATIO, RHO, duration=DURATION, spacing=SPACING)
  assert float(jnp.abs(r).max()) < 1e-10
  # ... and the whole loss is zero at the truth (the data are its own segmentation and PET).
  assert float(odil.loss(odil.make_unknowns(u, truth), scan, seed=seed)) < 1e-18
  # A wrong ρ leaves a residual of size |Δρ| u(1-u).
  r_bad = odil.pde_residual(u, scan.tissue, D_WHITE, RATIO, 1.1 * RHO, duration=DURATION, spacing=SPACING)
  expected = -0.1 * RHO * 0.5 * (u[1:] * (1 - u[1:]) + u[:-1] * (1 - u[:-1]))
  np.testing.assert_allclose(r_bad, expected, atol=1e-10)


def test_residual_matches_closed_form_logistic(x64):
  # D = 0 (all CSF-free but tissue-less diffusion): the residual of the exact logistic solution is O(Δt²).
  tissue = tg.TissueMaps(jnp.zeros((3,)), jnp.zeros((3,)), jnp.ones((3,)))
  u0 = np.array([0.05, 0.3, 0.7])
  maxima = []
  for n in (8, 16):
    t = np.linspace(0, 2.0, n + 1)[:, None]
    u = jnp.asarray(tg.logistic(u0, t, 1.5))
    maxima.append(float(jnp.abs(odil.pde_residual(u, tissue, 1.0, 10.0, 1.5, duration=2.0, spacing=1.0)).max()))
  assert 3.6 < maxima[0] / maxima[1] < 4.4


def test_gradient_against_finite_differences(x64):
  scan, u, truth, seed = _problem((8, 8), num_steps=4)
  key = jax.random.key(5)
  unknowns = odil.make_unknowns(u, truth, num_levels=2)
  # Away from the truth (every term active) and off the hinge kinks.
  unknowns = jax.tree.map(
    lambda x, k: x + 0.05 * jax.random.normal(k, x.shape, x.dtype),
    unknowns,
    jax.tree.unflatten(jax.tree.structure(unknowns), jax.random.split(key, len(jax.tree.leaves(unknowns)))),
  )
  direction = jax.tree.map(lambda x: jax.random.normal(jax.random.fold_in(key, x.size), x.shape, x.dtype), unknowns)

  def f(eps):
    return odil.loss(jax.tree.map(lambda x, d: x + eps * d, unknowns, direction), scan, seed=seed)

  f = jax.jit(f)
  grad = jax.jit(jax.grad(lambda x: odil.loss(x, scan, seed=seed)))(unknowns)
  analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
  eps = 1e-6
  numeric = (f(eps) - f(-eps)) / (2 * eps)
  np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


@pytest.mark.slow
def test_weighted_residuals_square_to_loss_and_jit(problem):
  scan, u, truth, seed = problem
  unknowns = odil.make_unknowns(u * 0.9, truth._replace(log_rho=truth.log_rho + 0.2), num_levels=3)
  value = odil.loss(unknowns, scan, seed=seed)
  r = odil.weighted_residuals(unknowns, scan, seed=seed)
  np.testing.assert_allclose(float(jnp.sum(r**2)), float(value), rtol=1e-5)
  np.testing.assert_allclose(float(jax.jit(lambda x: odil.loss(x, scan, seed=seed))(unknowns)), float(value), rtol=1e-6)
  # vmap over the parameters equals a loop.
  rhos = jnp.log(jnp.array([0.2, 0.25, 0.3]))
  batch = jax.vmap(lambda lr: odil.loss(unknowns._replace(params=truth._replace(log_rho=lr)), scan, seed=seed))(rhos)
  loop = [odil.loss(unknowns._replace(params=truth._replace(log_rho=lr)), scan, seed=seed) for lr in rhos]
  np.testing.assert_allclose(batch, loop, rtol=1e-5)


def test_multigrid_levels_sum():
  field = jnp.arange(5 * 6 * 6, dtype=jnp.float32).reshape(5, 6, 6) / 100
  params = odil.make_params(1.0, 0.1, 10.0, [1.0, 1.0])
  u = odil.make_unknowns(field, params, num_levels=3)
  assert [x.shape for x in u.levels] == [(5, 6, 6), (3, 3, 3), (2, 2, 2)]
  np.testing.assert_array_equal(odil.field_from_levels(u.levels), field)
  # A constant on a coarse level adds that constant everywhere (interpolation reproduces constants).
  levels = (u.levels[0], u.levels[1] + 0.5, u.levels[2])
  np.testing.assert_allclose(odil.field_from_levels(levels), field + 0.5, atol=1e-6)


@pytest.fixture(scope="module")
def problem():
  return _problem()


def test_step_by_hand_equals_fit(problem):
  scan, u, truth, seed = problem
  start = odil.make_unknowns(jnp.linspace(0, 1, u.shape[0])[:, None, None] * u[-1], truth, num_levels=2)
  opt = optax.adam(1e-2)
  out = odil.fit(start, scan, optimizer=opt, num_iterations=5, seed=seed)
  state = odil.init(start, opt)
  step = jax.jit(lambda state: odil.step(state, scan, optimizer=opt, seed=seed))
  losses = []
  for _ in range(5):
    state, info = step(state)
    losses.append(info.loss)
  np.testing.assert_allclose(out.losses, losses, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out.unknowns), jax.tree.leaves(state.unknowns)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(out.losses[-1]) < float(out.losses[0])


@pytest.mark.slow
def test_lbfgs_and_gauss_newton_recover_the_parameters(x64):
  # From a field that ignores the PDE and wrong D, ρ: both optimisers drive the loss to ~0 and find D, ρ.
  scan, u, truth, seed = _problem((12,), num_steps=6, seed_width=1.5)
  guess = truth._replace(log_d_white=truth.log_d_white + 0.3, log_rho=truth.log_rho - 0.3)
  start = odil.make_unknowns(
    jnp.linspace(0, 1, u.shape[0])[:, None] * u[-1] + (1 - jnp.linspace(0, 1, 7))[:, None] * u[0], guess
  )
  for out in (
    odil.fit(start, scan, optimizer=optax.lbfgs(), num_iterations=500, seed=seed),
    odil.gauss_newton(start, scan, num_iterations=30, num_cg_iterations=300, seed=seed),
  ):
    assert float(out.loss) < 1e-4 * float(out.losses[0])
    p = out.unknowns.params
    assert abs(float(p.d_white) / D_WHITE - 1) < 0.05 and abs(float(p.rho) / RHO - 1) < 0.05


def test_initial_guess_is_a_forward_run():
  scan, u, truth, seed = _problem((16, 16), num_steps=6, seed_width=2.0)
  start = odil.initial_guess(scan, 6, d_white=D_WHITE, rho=RHO, ratio=RATIO, seed=seed, search_radius=1)
  p = start.params
  # The run stops near T with the true parameters, so the time rescaling t*/T stays near 1 and the seed near c.
  assert abs(float(p.d_white) / D_WHITE - 1) < 0.35 and abs(float(p.rho) / RHO - float(p.d_white) / D_WHITE) < 1e-5
  assert float(jnp.abs(p.centre - truth.centre).max()) <= SPACING + 1e-6
  assert start.levels[0].shape == u.shape


def test_bad_input(problem):
  scan, u, truth, _ = problem
  unknowns = odil.make_unknowns(u, truth)
  with pytest.raises(TypeError, match="scan"):
    odil.loss(unknowns, (scan.tissue, scan.labels))
  with pytest.raises(ValueError, match="labels"):
    odil.loss(unknowns, scan._replace(labels=scan.labels[:-1]))
  with pytest.raises(TypeError, match="labels"):
    odil.loss(unknowns, scan._replace(labels=scan.labels.astype(jnp.float32)))
  with pytest.raises(ValueError, match="levels"):
    odil.loss(unknowns._replace(levels=(u[:, :-1],)), scan)
  with pytest.raises(ValueError, match="centre"):
    odil.loss(unknowns._replace(params=truth._replace(centre=jnp.zeros(3))), scan)
  with pytest.raises(ValueError, match="duration"):
    odil.loss(unknowns, scan._replace(duration=-1.0))
  with pytest.raises(ValueError, match="num_iterations"):
    odil.fit(unknowns, scan, num_iterations=0)
  with pytest.raises(ValueError, match="damping"):
    odil.gauss_newton(unknowns, scan, damping=0.0)
  with pytest.raises(ValueError, match="u"):
    odil.pde_residual(u[:1], scan.tissue, 1.0, 10.0, 0.1, duration=1.0, spacing=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_fields_and_parameters(problem):
  _, u, truth, _ = problem
  with pytest.raises(TypeError, match="`levels`"):  # one array: its time slices were summed as levels
    odil.field_from_levels(u)
  with pytest.raises(ValueError, match=r"`levels\[1\]`"):  # was a jax.image.resize error
    odil.field_from_levels((u, jnp.zeros((2, 2))))
  with pytest.raises(ValueError, match="`level`"):  # gave float sizes
    odil.level_shape(u.shape, -1)
  with pytest.raises(ValueError, match="`d_white`"):
    odil.make_params(0.0, RHO, RATIO, [5.0, 5.0])
  with pytest.raises(ValueError, match="`centre`"):
    odil.make_params(D_WHITE, RHO, RATIO, [[5.0, 5.0]])
  with pytest.raises(TypeError, match="`field`"):
    odil.make_unknowns(u.astype(jnp.int32), truth)
  with pytest.raises(ValueError, match="`field`"):  # no time axis
    odil.make_unknowns(u[-1, 0], truth)
  with pytest.raises(TypeError, match="`params`"):
    odil.make_unknowns(u, (D_WHITE, RHO, RATIO))


def test_bad_input_loss_terms_and_optimisation(problem):
  scan, u, truth, seed = problem
  unknowns = odil.make_unknowns(u, truth)
  with pytest.raises(TypeError, match="`scan`"):
    odil.residual_terms(unknowns, (scan.tissue, scan.labels))
  with pytest.raises(TypeError, match="`seed`"):  # an AttributeError
    odil.residual_terms(unknowns, scan, seed=2.0)
  with pytest.raises(TypeError, match="`bounds`"):
    odil.residual_terms(unknowns, scan, bounds=(0.1, 1.0))
  with pytest.raises(TypeError, match="`weights`"):
    odil.weighted_residuals(unknowns, scan, weights={"pde": 1.0})
  opt = optax.adam(1e-2)
  with pytest.raises(TypeError, match="`optimizer`"):
    odil.init(unknowns, "adam")
  with pytest.raises(TypeError, match="`unknowns`"):
    odil.init(u, opt)
  state = odil.init(unknowns, opt)
  with pytest.raises(TypeError, match="`state`"):
    odil.step(unknowns, scan, optimizer=opt)
  with pytest.raises(TypeError, match="`optimizer`"):
    odil.step(state, scan, optimizer="adam")
  with pytest.raises(ValueError, match="`num_steps`"):
    odil.initial_guess(scan, 0, d_white=D_WHITE, rho=RHO, ratio=RATIO, seed=seed)
  with pytest.raises(ValueError, match="`horizon`"):  # the forward run's num_steps = 0 was blamed
    odil.initial_guess(scan, 6, d_white=D_WHITE, rho=RHO, ratio=RATIO, seed=seed, horizon=0.0)
