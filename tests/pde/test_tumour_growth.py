"""The Fisher–Kolmogorov discretisation against closed forms (heat kernel, logistic ODE), conservation, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.pde import tumour_growth as tg


def _uniform(shape, dtype=jnp.float64):
  return tg.TissueMaps(jnp.ones(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _random_tissue(key, shape):
  k1, k2 = jax.random.split(key)
  white = jax.random.uniform(k1, shape)
  grey = (1 - white) * jax.random.uniform(k2, shape)
  return tg.TissueMaps(white, grey, 1 - white - grey)


@pytest.mark.parametrize("shape", [(7, 9), (4, 5, 6)])
def test_flux_form_conserves_mass(x64, shape):
  # Σ ∇·(D∇u) = 0 for any u and D (telescoping fluxes, no flux through the boundary), and a ρ = 0 run keeps Σu.
  key = jax.random.key(1)
  tissue = _random_tissue(key, shape)
  faces = tg.diffusion_faces(tissue, 1.3, 15.0)
  u = jax.random.uniform(jax.random.fold_in(key, 1), shape)
  assert abs(float(tg.divergence(u, faces, 0.7).sum())) < 1e-12
  us = tg.simulate(u, faces, 0.0, duration=2.0, num_steps=5, spacing=0.7, cg_tol=1e-13)
  np.testing.assert_allclose(us.sum(axis=tuple(range(1, us.ndim))), float(u.sum()), rtol=1e-11)


def test_divergence_matches_dense_laplacian(x64):
  # Uniform D on a 1-D grid: L = D/h² × the Neumann second-difference matrix, written out.
  n, d, h = 6, 0.4, 0.5
  lap = -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
  lap[0, 0] = lap[-1, -1] = -1
  u = jnp.asarray(np.random.default_rng(0).normal(size=n))
  out = tg.divergence(u, tg.diffusion_faces(_uniform((n,)), d, 10.0), h)
  np.testing.assert_allclose(out, d / h**2 * lap @ np.asarray(u), atol=1e-12)


def test_tissue_dependent_faces(x64):
  # Grey matter diffuses r times slower; a face next to CSF (white + grey < 0.1 on the face) is closed.
  white = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])
  grey = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0])
  (faces,) = tg.diffusion_faces(tg.TissueMaps(white, grey, 1 - white - grey), 2.0, 10.0)
  np.testing.assert_allclose(faces, [2.0, 2.0 * (0.5 + 0.05), 2.0 * 0.05, 0.0])


def test_logistic_limit_second_order(x64):
  # D = 0: every cell follows u' = ρu(1 - u); Crank–Nicolson's error falls 4x per halving of Δt.
  u0 = jnp.array([0.05, 0.3, 0.7])
  tissue, rho, t_end = _uniform((3,)), 1.5, 2.0
  faces = tuple(jnp.zeros_like(f) for f in tg.diffusion_faces(tissue, 1.0, 10.0))
  errors = []
  for n in (8, 16, 32):
    us = tg.simulate(u0, faces, rho, duration=t_end, num_steps=n, spacing=1.0, cg_tol=1e-14)
    errors.append(float(jnp.abs(us[-1] - tg.logistic(u0, t_end, rho)).max()))
  ratios = np.array(errors[:-1]) / np.array(errors[1:])
  assert np.all((ratios > 3.7) & (ratios < 4.3)), ratios


def test_heat_kernel_second_order(x64):
  # ρ = 0, uniform D on a wide 1-D domain: the Gaussian spreads as the heat kernel; h and Δt halve together.
  d, var0, t_end, length = 0.5, 1.0, 2.0, 24.0
  errors = []
  for n in (48, 96, 192):
    h = length / n
    x = (np.arange(n) + 0.5) * h - length / 2
    u0 = jnp.asarray(tg.heat_kernel(x, 0.0, diffusion=d, variance0=var0))
    faces = tg.diffusion_faces(_uniform((n,)), d, 10.0)
    us = tg.simulate(u0, faces, 0.0, duration=t_end, num_steps=n // 6, spacing=h, cg_tol=1e-14)
    errors.append(np.abs(np.asarray(us[-1]) - tg.heat_kernel(x, t_end, diffusion=d, variance0=var0)).max())
  ratios = np.array(errors[:-1]) / np.array(errors[1:])
  assert np.all((ratios > 3.5) & (ratios < 4.5)), ratios


def test_simulate_jit_and_vmap():
  tissue = _random_tissue(jax.random.key(2), (6, 6))
  faces = tg.diffusion_faces(tissue, 0.8, 12.0)
  u0 = tg.gaussian_seed((6, 6), jnp.array([3.0, 3.0]), 1.0, width=1.5)
  run = jax.jit(tg.simulate, static_argnames=("num_steps",))
  a = tg.simulate(u0, faces, 0.2, duration=1.0, num_steps=3, spacing=1.0)
  np.testing.assert_allclose(run(u0, faces, 0.2, duration=1.0, num_steps=3, spacing=1.0), a, atol=1e-6)
  rhos = jnp.array([0.1, 0.2])
  batch = jax.vmap(lambda r: tg.simulate(u0, faces, r, duration=1.0, num_steps=3, spacing=1.0))(rhos)
  np.testing.assert_allclose(batch[1], a, atol=1e-6)
  assert bool(batch[0, -1].sum() < batch[1, -1].sum())


def test_synthetic_brain_and_patient():
  tissue = tg.synthetic_brain((24, 24), 2.0, key=jax.random.key(0))
  total = tissue.white + tissue.grey + tissue.csf
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  for m in tissue:
    assert float(m.min()) >= -1e-6 and float(m.max()) > 0.99  # every class is present somewhere
  # A fine brain block-averages onto the coarse one.
  fine = tg.synthetic_brain((48, 48), 1.0, key=jax.random.key(0), supersample=2)
  np.testing.assert_allclose(tg.block_average(fine.white, 2), tissue.white, atol=1e-6)
  p = tg.synthetic_patient(jax.random.key(3), (24, 24), spacing=4.0, num_steps=8, refine=1, time_refine=2)
  assert p.field.shape == (9, 24, 24)
  np.testing.assert_array_equal(p.labels, tg.segment(p.field[-1], p.theta_down, p.theta_up))
  assert 0.15 <= p.theta_down <= 0.35 and 0.45 <= p.theta_up <= 0.6
  np.testing.assert_allclose(p.pet, jnp.where(p.labels > 0, p.field[-1], 0.0))


def test_dice_and_uniform_margin():
  a = np.zeros((10, 10), bool)
  a[2:5, 2:5] = True
  b = np.zeros_like(a)
  b[3:6, 2:5] = True
  assert tg.dice(a, b) == pytest.approx(2 * 6 / 18)
  assert tg.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
  # The margin has exactly the asked size, contains the lesion, and holds the cells nearest to it (brute force).
  margin = tg.uniform_margin(a, 30)
  assert margin.sum() == 30 and (margin | ~a).all()
  ii, jj = np.nonzero(a)
  dist = np.array([[np.min(np.hypot(ii - i, jj - j)) for j in range(10)] for i in range(10)])
  assert dist[margin].max() <= dist[~margin].min()
  mask = np.ones_like(a)
  mask[:, 5:] = False
  assert not tg.uniform_margin(a, 20, mask=mask)[:, 5:].any()


def test_bad_input():
  tissue = _uniform((5, 5), jnp.float32)
  with pytest.raises(ValueError, match="`a` and `b` must be masks of one shape"):
    tg.dice(np.ones((4, 4), bool), np.ones((3, 3), bool))
  with pytest.raises(ValueError, match="`num_cells` must be an int >= 0"):
    tg.uniform_margin(np.ones((4, 4), bool), -1)
  with pytest.raises(ValueError, match="`mask` must have the lesion's shape"):
    tg.uniform_margin(np.ones((4, 4), bool), 3, mask=np.ones((3, 3), bool))
  with pytest.raises(ValueError, match="`theta_down` \\(0.6\\) must not exceed `theta_up`"):
    tg.segment(jnp.full((4, 4), 0.5), 0.6, 0.25)
  with pytest.raises(ValueError, match="d_white"):
    tg.diffusion_faces(tissue, -1.0, 10.0)
  with pytest.raises(TypeError, match="tissue"):
    tg.diffusion_faces((tissue.white, tissue.grey), 1.0, 10.0)
  faces = tg.diffusion_faces(tissue, 1.0, 10.0)
  with pytest.raises(ValueError, match="num_steps"):
    tg.simulate(jnp.zeros((5, 5)), faces, 0.1, duration=1.0, num_steps=0, spacing=1.0)
  with pytest.raises(ValueError, match="faces"):
    tg.simulate(jnp.zeros((5, 5, 5)), faces, 0.1, duration=1.0, num_steps=2, spacing=1.0)
  with pytest.raises(TypeError, match="u0"):
    tg.simulate(jnp.zeros((5, 5), int), faces, 0.1, duration=1.0, num_steps=2, spacing=1.0)
  with pytest.raises(ValueError, match="centre"):
    tg.gaussian_seed((5, 5), jnp.zeros(3), 1.0)
  with pytest.raises(ValueError, match="shape"):
    tg.synthetic_brain((5,), 1.0)
  with pytest.raises(ValueError, match="factor"):
    tg.block_average(jnp.zeros((5, 5)), 2)


# Bad input


def test_bad_input_checks_and_discretisation():
  with pytest.raises(ValueError, match="`num_steps`"):
    tg.check_count(0, "num_steps")
  with pytest.raises(ValueError, match="`spacing`"):
    tg.check_positive(-1.0, "spacing")
  with pytest.raises(TypeError, match="`u0`"):
    tg.check_spatial(jnp.zeros((4, 4), jnp.int32), "u0")
  faces = tg.diffusion_faces(_uniform((5, 5), jnp.float32), 1.0, 10.0)
  u = jnp.zeros((5, 5))
  with pytest.raises(ValueError, match="`spacing`"):
    tg.divergence(u, faces, 0.0)
  with pytest.raises(ValueError, match="`faces`"):
    tg.divergence(jnp.zeros(5), faces, 1.0)
  with pytest.raises(ValueError, match="`rho`"):
    tg.reaction(u, -0.5)
  with pytest.raises(TypeError, match="`rho`"):
    tg.reaction(u, "fast")
  with pytest.raises(ValueError, match="`dt`"):
    tg.crank_nicolson_step(u, faces, 0.1, 0.0, 1.0)
  with pytest.raises(ValueError, match="`labels`"):
    tg.pet_signal(u, jnp.zeros((4, 5), jnp.int32))


def test_bad_input_patient_and_closed_forms():
  with pytest.raises(ValueError, match="`duration`"):
    tg.synthetic_patient(jax.random.key(0), (24, 24), duration=0.0)
  with pytest.raises(ValueError, match="`refine`"):
    tg.synthetic_patient(jax.random.key(0), (24, 24), refine=0)
  with pytest.raises(ValueError, match="`variance0`"):
    tg.heat_kernel(np.zeros(3), 1.0, diffusion=0.5, variance0=-1.0)
  with pytest.raises(ValueError, match="`diffusion`"):
    tg.heat_kernel(np.zeros(3), 1.0, diffusion=-0.5, variance0=1.0)
  with pytest.raises(ValueError, match="`u0`"):
    tg.logistic(np.array([0.2, -0.5]), 2.0, 1.0)
