"""Tester-learner for halfspaces (GKSV, ICLR 2024) against closed forms, quadrature and numpy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from toolkit.stats import halfspace_data as hd
from toolkit.stats import halfspace_tester as ht


def _unit(v):
  v = np.asarray(v, np.float32)
  return jnp.asarray(v / np.linalg.norm(v))


# ------------------------------------------------------------------------------------------ Gaussian oracles


def test_band_mass_and_in_band_covariance_under_gaussian():
  """Pr[|<w,x>| <= σ] = 2Φ(σ) − 1 and, in the band, the w^⊥ coordinates have mean 0 and covariance I."""
  n, d = 200_000, 4
  x = jax.random.normal(jax.random.key(0), (n, d))
  w = _unit([0.3, -0.5, 0.8, 0.1])
  widths = (0.1, 0.4)
  bands = jax.jit(lambda w, x: ht.band_statistics(w, x, widths))(w, x)
  basis = np.asarray(ht.orthogonal_basis(w))
  np.testing.assert_allclose(basis.T @ basis, np.eye(d - 1), atol=1e-6)
  np.testing.assert_allclose(basis.T @ np.asarray(w), 0.0, atol=1e-6)
  xn, proj = np.asarray(x), np.asarray(x @ w)
  for i, width in enumerate(widths):
    p = 2 * stats.norm.cdf(width) - 1
    assert abs(float(bands.mass[i]) - p) < 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(float(ht.gaussian_band_mass(width)), p, rtol=1e-6)
    u = xn[np.abs(proj) <= width] @ basis
    m = u.shape[0]
    assert float(bands.count[i]) == m
    np.testing.assert_allclose(u.mean(0), 0.0, atol=5 / np.sqrt(m))
    np.testing.assert_allclose(np.cov(u.T), np.eye(d - 1), atol=5 * np.sqrt(2 / m))
    assert float(bands.moment_statistic[i]) < 4.5 and float(bands.mass_statistic[i]) < 4.0


def test_moment_tables_match_gauss_hermite_quadrature():
  """E x^α and sd(x^α) of N(0, I_2) for every entry of orders 1..4, against Gauss-Hermite quadrature (exact)."""
  nodes, weights = np.polynomial.hermite_e.hermegauss(12)
  weights = weights / weights.sum()

  def gauss_moment(powers):
    return np.prod([np.sum(weights * nodes**p) for p in powers])

  for order in range(1, 5):
    mean, sd = ht._moment_tables(2, order)
    for k, idx in enumerate(itertools.product(range(2), repeat=order)):
      powers = np.bincount(idx, minlength=2)
      np.testing.assert_allclose(mean[k], gauss_moment(powers), atol=1e-9)
      np.testing.assert_allclose(sd[k] ** 2, gauss_moment(2 * powers) - gauss_moment(powers) ** 2, rtol=1e-9)


def test_empirical_moments_match_numpy_einsum():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 3)).astype(np.float32)
  mask = (rng.uniform(size=50) < 0.6).astype(np.float32)
  xm = x[mask > 0]
  expected = {
    1: xm.mean(0),
    2: np.einsum("ni,nj->ij", xm, xm) / len(xm),
    3: np.einsum("ni,nj,nk->ijk", xm, xm, xm) / len(xm),
    4: np.einsum("ni,nj,nk,nl->ijkl", xm, xm, xm, xm) / len(xm),
  }
  for order, e in expected.items():
    got = ht._empirical_moments(jnp.asarray(x), jnp.asarray(mask), order)
    np.testing.assert_allclose(np.asarray(got), e.reshape(-1), rtol=1e-4, atol=1e-5)


def test_statistic_counts_and_threshold():
  assert ht.num_moment_statistics(10, 4) == 1000  # C(14, 4) − 1 distinct moments
  assert ht.num_moment_statistics(3, 2) == 9  # 3 means + 6 second moments
  assert ht.num_statistics(10, degree=4, band_degree=2, num_candidates=8, num_widths=4) == 1000 + 32 * 55
  np.testing.assert_allclose(ht.bonferroni_threshold(0.05, 10), stats.norm.ppf(1 - 0.0025), rtol=1e-9)


# ------------------------------------------------------------------------------------------- the tester


@pytest.fixture(scope="module")
def acceptance():
  """Acceptance of the tester over 48 seeds (one vmapped call) for Gaussian and spike data, fixed candidates."""
  d, n = 3, 6000
  candidates = jnp.stack([jnp.eye(d)[0], _unit([1.0, 0.2, -0.1]), _unit([0.0, 1.0, 1.0])])

  def one(key, spike):
    x = jnp.where(spike, hd.spike_marginal(key, n, d), hd.gaussian(key, n, d))
    out = ht.run_tests(x, candidates, degree=4, delta=0.05)
    return out.accepted, out.global_passed

  keys = jax.random.split(jax.random.key(1), 48)
  run = jax.jit(jax.vmap(one, in_axes=(0, None)))
  return run(keys, False), run(keys, True)


def test_tester_accepts_gaussian_with_probability_at_least_one_minus_delta(acceptance):
  (accepted, global_passed), _ = acceptance
  # δ = 0.05: 48 seeds, at most 4 rejections (P[Bin(48, 0.05) > 4] < 0.1 even at the worst case δ).
  assert float(accepted.mean()) >= 1 - 4 / 48
  assert float(global_passed.mean()) >= 1 - 4 / 48


def test_band_tests_reject_spike_that_fools_moment_matching(acceptance):
  _, (accepted, global_passed) = acceptance
  assert float(accepted.mean()) == 0.0  # the band mass around e1 is ~4x the Gaussian's
  assert float(global_passed.mean()) >= 1 - 4 / 48  # its moments of degree <= 4 are the Gaussian's


def test_slacks_widen_the_tolerance():
  x = jax.random.normal(jax.random.key(2), (5000, 2)).at[:, 0].mul(1.1)  # variance 1.21: 10 sd of x² away
  assert float(ht.moment_statistic(x, degree=2)) > 5.0
  assert float(ht.moment_statistic(x, degree=2, slack=0.3)) < 0.0  # |0.21| / sd(√2) < 0.3 per sd
  cand = jnp.eye(2)[:1]
  tests = jax.jit(lambda x, slack: ht.run_tests(x, cand, moment_slack=slack, mass_slack=slack).accepted)
  assert not bool(tests(x, 0.0))
  assert bool(tests(x, 0.3))


# ----------------------------------------------------------------------------------------------- data oracles


def test_spike_marginal_matches_gaussian_moments_and_band_mass_closed_form():
  prm = hd.spike_params(0.3, 0.05)
  p, s, c, lam = prm
  # Exact second and fourth moments from the construction.
  np.testing.assert_allclose(p * s**2 + (1 - p) * c**2, 1.0, rtol=1e-12)
  np.testing.assert_allclose(3 * p * s**4 + (1 - p) * c**4 * (3 - 2 * lam**2), 3.0, rtol=1e-12)
  x1 = np.asarray(hd.spike_marginal(jax.random.key(3), 400_000, 1))[:, 0].astype(np.float64)
  se = lambda v: np.sqrt(v / x1.size)
  assert abs(x1.mean()) < 5 * se(1.0)
  assert abs((x1**2).mean() - 1) < 5 * se(2.0)
  assert abs((x1**3).mean()) < 5 * se(15.0)
  assert abs((x1**4).mean() - 3) < 5 * se(96.0)
  for width in (0.05, 0.2, 1.0):
    q = float(hd.spike_band_mass(width))
    assert abs((np.abs(x1) <= width).mean() - q) < 5 * np.sqrt(q * (1 - q) / x1.size)
  assert float(hd.spike_band_mass(0.1)) > 3.5 * float(hd.gaussian_band_mass(0.1))


def test_noise_generators():
  n, d = 200_000, 3
  x = hd.gaussian(jax.random.key(4), n, d)
  w_star, v = jnp.eye(d)[0], jnp.eye(d)[1]
  y = hd.massart_labels(jax.random.key(5), x, w_star, eta=0.2, margin=0.3)
  err = float(hd.error_rate(w_star, x, y))
  opt = hd.massart_opt(0.2, 0.3)
  np.testing.assert_allclose(opt, 0.2 * 2 * stats.norm.sf(0.3), rtol=1e-6)
  assert abs(err - opt) < 5 * np.sqrt(opt * (1 - opt) / n)
  near = np.abs(np.asarray(x[:, 0])) <= 0.3
  assert np.all(np.asarray(y)[near] == np.sign(np.asarray(x[:, 0]))[near])  # no flips near the boundary
  ya = hd.adversarial_labels(x, w_star, v, opt=0.05)
  assert abs(float(hd.error_rate(w_star, x, ya)) - 0.05) < 5 * np.sqrt(0.05 * 0.95 / n)
  # A halfspace slightly rotated towards v beats w*: the corruption moves the optimum.
  w_rot = _unit([1.0, -0.1, 0.0])
  assert float(hd.error_rate(w_rot, x, ya)) < 0.05


def test_error_is_angle_over_pi_without_noise():
  x = hd.gaussian(jax.random.key(6), 400_000, 3)
  w_star, w = jnp.eye(3)[0], _unit([1.0, 0.3, -0.2])
  y = jnp.where(x @ w_star >= 0, 1.0, -1.0)
  np.testing.assert_allclose(float(hd.error_rate(w, x, y)), float(hd.angle(w, w_star)) / np.pi, atol=3e-3)


# --------------------------------------------------------------------------------------------------- learner


def test_surrogate_loss_matches_numpy():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(20, 3))
  y = np.sign(rng.normal(size=20))
  w = np.array([0.5, -1.0, 2.0])
  expected = np.mean(1 / (1 + np.exp(y * (x @ w) / np.linalg.norm(w) / 0.1)))
  np.testing.assert_allclose(
    float(ht.surrogate_loss(jnp.asarray(w), jnp.asarray(x), jnp.asarray(y), 0.1)), expected, rtol=1e-6
  )
  # Scale invariance.
  np.testing.assert_allclose(
    float(ht.surrogate_loss(jnp.asarray(3 * w), jnp.asarray(x), jnp.asarray(y), 0.1)), expected, rtol=1e-6
  )


@pytest.fixture(scope="module")
def noisy_data():
  x = hd.gaussian(jax.random.key(8), 8000, 4)
  y = hd.massart_labels(jax.random.key(9), x, jnp.eye(4)[0])
  return x, y


def test_learn_equals_step_by_hand_and_recovers_w_star(noisy_data):
  x, y = noisy_data
  opt = optax.sgd(0.05)
  kw = {"sigma": 0.1, "optimizer": opt, "batch_size": 64}
  w0 = _unit([0.2, 1.0, -0.5, 0.3])
  out = jax.jit(lambda k: ht.learn(k, x, y, num_steps=300, num_candidates=3, w0=w0, **kw))(jax.random.key(10))
  state = ht.init(w0, opt)
  step = jax.jit(lambda k, s: ht.step(k, s, x, y, **kw))
  _, k_steps = jax.random.split(jax.random.key(10))
  for i, k in enumerate(jax.random.split(k_steps, 300)):
    state, info = step(k, state)
    np.testing.assert_array_equal(np.asarray(info.loss), np.asarray(out.losses[i]))
  np.testing.assert_array_equal(np.asarray(state.w), np.asarray(out.w))
  np.testing.assert_array_equal(np.asarray(out.candidates[-1]), np.asarray(out.w))
  np.testing.assert_allclose(float(jnp.linalg.norm(out.w)), 1.0, rtol=1e-6)
  assert float(hd.angle(out.w, jnp.eye(4)[0])) < 0.2


@pytest.mark.slow
def test_tester_learner_jit_vmap_and_loop_agree(noisy_data):
  x, y = noisy_data
  kw = {"num_steps": 200, "num_candidates": 2, "degree": 2}
  run = jax.jit(lambda k: ht.halfspace_tester_learner(k, x, y, **kw))
  keys = jax.random.split(jax.random.key(11), 2)
  batched = jax.jit(jax.vmap(lambda k: ht.halfspace_tester_learner(k, x, y, **kw)))(keys)
  for i, k in enumerate(keys):
    one = run(k)
    np.testing.assert_allclose(np.asarray(batched.w[i]), np.asarray(one.w), atol=1e-5)
    assert bool(batched.accepted[i]) == bool(one.accepted)
    errs = [float(hd.error_rate(c, x[4000:], y[4000:])) for c in one.candidates]
    np.testing.assert_allclose(np.asarray(one.candidate_errors), errs, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(one.w), np.asarray(one.candidates[int(np.argmin(errs))]))


# --------------------------------------------------------------------------------------------------- errors


def test_bad_inputs_raise():
  x, y = jnp.zeros((10, 3)), jnp.ones(10)
  with pytest.raises(ValueError, match="`y` must have shape"):
    ht.learn(jax.random.key(0), x, jnp.ones(9))
  with pytest.raises(ValueError, match="`num_steps`"):
    ht.learn(jax.random.key(0), x, y, num_steps=2, num_candidates=4)
  with pytest.raises(ValueError, match="`degree` must be <= 4"):
    ht.moment_statistic(x, degree=5)
  with pytest.raises(ValueError, match="`candidates` must have shape"):
    ht.run_tests(x, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="`band_widths`"):
    ht.run_tests(x, jnp.zeros((2, 3)), band_widths=())
  with pytest.raises(ValueError, match="`delta`"):
    ht.run_tests(x, jnp.zeros((2, 3)), delta=1.5)
  with pytest.raises(ValueError, match="`train_fraction`"):
    ht.halfspace_tester_learner(jax.random.key(0), x, y, train_fraction=1.0)
  with pytest.raises(ValueError, match="`eta` must be in"):
    hd.massart_labels(jax.random.key(0), x, jnp.eye(3)[0], eta=0.6)
  with pytest.raises(ValueError, match="cannot match the Gaussian fourth moment"):
    hd.spike_params(0.9, 0.05)
  with pytest.raises(ValueError, match="`num_samples`"):
    hd.gaussian(jax.random.key(0), 0, 3)
  # The step API checks what learn checks, and σ (NaN gradients at σ = 0 used to pass silently).
  state, opt, key = ht.init(jnp.eye(3)[0], optax.sgd(0.1)), optax.sgd(0.1), jax.random.key(0)
  with pytest.raises(ValueError, match="`y` must have shape"):
    ht.step(key, state, x, jnp.ones(9), sigma=0.1, optimizer=opt, batch_size=4)
  with pytest.raises(ValueError, match="`x` must have 3 columns"):
    ht.step(key, state, jnp.zeros((10, 4)), y, sigma=0.1, optimizer=opt, batch_size=4)
  with pytest.raises(ValueError, match="`batch_size` must be a Python int >= 1"):
    ht.step(key, state, x, y, sigma=0.1, optimizer=opt, batch_size=0)
  for sigma in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="`sigma` must be a scalar > 0"):
      ht.step(key, state, x, y, sigma=sigma, optimizer=opt, batch_size=4)
  with pytest.raises(ValueError, match="`w0` must be a non-zero vector"):
    ht.init(jnp.zeros(3), opt)
  with pytest.raises(ValueError, match="`eta` must be in \\[0, 1/2\\)"):
    hd.massart_opt(eta=0.7)
  with pytest.raises(ValueError, match="`w` must be \\(d,\\) and `y` \\(n,\\)"):
    hd.error_rate(jnp.ones(3), jnp.ones((5, 3)), jnp.ones(4))
  with pytest.raises(ValueError, match="`w` and `w_star` must be \\(d,\\) vectors of one size"):
    hd.angle(jnp.ones(2), jnp.ones(3))
  with pytest.raises(ValueError, match="`w` must be a non-zero vector"):
    hd.angle(jnp.zeros(3), jnp.ones(3))


def test_halfspace_data_bad_inputs():
  x, e = jnp.zeros((10, 3)), jnp.eye(3)
  for fn in (hd.gaussian_band_mass, hd.spike_band_mass):
    for width in (-0.1, float("nan"), jnp.array([0.1, -1.0])):
      with pytest.raises(ValueError, match="`width` must be >= 0"):
        fn(width)
  with pytest.raises(ValueError, match="`width` must be >= 0"):
    hd.gaussian_band_mass(-1.0)
  with pytest.raises(ValueError, match="`width` must be >= 0"):
    hd.spike_band_mass(-1.0)
  with pytest.raises(ValueError, match="`spike_mass`"):
    hd.spike_band_mass(0.1, spike_mass=1.5)
  with pytest.raises(ValueError, match="`num_samples`"):
    hd.spike_marginal(jax.random.key(0), 0, 2)
  with pytest.raises(ValueError, match="`dim`"):
    hd.spike_marginal(jax.random.key(0), 10, 0)
  with pytest.raises(ValueError, match="`spike_scale`"):
    hd.spike_marginal(jax.random.key(0), 10, 2, spike_scale=1.5)
  with pytest.raises(ValueError, match="`spike_mass`"):
    hd.spike_marginal(jax.random.key(0), 10, 2, spike_mass=0.9)
  with pytest.raises(ValueError, match="`x` must have shape"):
    hd.massart_flip_probability(jnp.zeros(3), e[0])
  with pytest.raises(ValueError, match="`w_star` must have shape \\(3,\\)"):
    hd.massart_flip_probability(x, e[:1].T)  # (3, 1): the probabilities would come out (n, 1)
  with pytest.raises(ValueError, match="`eta` must be in \\[0, 1/2\\)"):
    hd.massart_flip_probability(x, e[0], eta=0.7)
  with pytest.raises(ValueError, match="`margin` must be >= 0"):
    hd.massart_flip_probability(x, e[0], margin=-0.1)
  with pytest.raises(ValueError, match="`x` must have shape"):
    hd.adversarial_labels(jnp.zeros(3), e[0], e[1])
  with pytest.raises(ValueError, match="`opt` must be in \\(0, 1/2\\)"):
    hd.adversarial_labels(x, e[0], e[1], opt=0.5)
  with pytest.raises(ValueError, match="`v` must have shape \\(3,\\)"):
    hd.adversarial_labels(x, e[0], e[1, :2])
  with pytest.raises(ValueError, match="`w_star` must be a unit vector"):
    hd.adversarial_labels(x, 2.0 * e[0], e[1])  # the wedge would not have mass opt
  with pytest.raises(ValueError, match="`v` must be orthogonal to `w_star`"):
    hd.adversarial_labels(x, e[0], e[0])


def test_halfspace_tester_bad_inputs():
  x, y, e = jnp.zeros((10, 3)), jnp.ones(10), jnp.eye(3)
  with pytest.raises(ValueError, match="`y` must have shape \\(10,\\)"):
    ht.surrogate_loss(e[0], x, y[:, None], 0.1)  # (n, 1) would broadcast into an (n, n) mean
  with pytest.raises(ValueError, match="`x` must be \\(num_samples, dim\\) and `w` \\(dim,\\)"):
    ht.surrogate_loss(e[0, :2], x, y, 0.1)
  with pytest.raises(ValueError, match="`w` must be a non-zero vector"):
    ht.surrogate_loss(jnp.zeros(3), x, y, 0.1)
  for sigma in (0.0, float("nan")):
    with pytest.raises(ValueError, match="`sigma` must be a scalar > 0"):
      ht.surrogate_loss(e[0], x, y, sigma)
  with pytest.raises(ValueError, match="`count` must be an int >= 1"):
    ht.bonferroni_threshold(0.05, 0)
  with pytest.raises(ValueError, match="`delta`"):
    ht.bonferroni_threshold(float("nan"), 10)
  with pytest.raises(ValueError, match="`dim` must be an int >= 0"):
    ht.num_moment_statistics(-1, 2)
  with pytest.raises(ValueError, match="`degree` must be an int >= 1"):
    ht.num_moment_statistics(3, 2.0)
  with pytest.raises(ValueError, match="`num_candidates` must be an int >= 1"):
    ht.num_statistics(3, degree=2, band_degree=2, num_candidates=0, num_widths=4)
  with pytest.raises(ValueError, match="`dim` must be an int >= 1"):
    ht.num_statistics(0, degree=2, band_degree=2, num_candidates=2, num_widths=4)
  with pytest.raises(ValueError, match="`num_widths`"):
    ht.num_statistics(3, degree=2, band_degree=2, num_candidates=2, num_widths=0)
  with pytest.raises(ValueError, match="`w` must have shape \\(dim,\\)"):
    ht.orthogonal_basis(e)
  with pytest.raises(ValueError, match="`w` must be a non-zero vector"):
    ht.orthogonal_basis(jnp.zeros(3))
  with pytest.raises(ValueError, match="`w` must have shape \\(3,\\)"):
    ht.band_statistics(e[0, :2], x, (0.1,))
  with pytest.raises(ValueError, match="`x` must have shape \\(num_samples, dim >= 2\\)"):
    ht.band_statistics(e[0, :1], jnp.zeros((10, 1)), (0.1,))
  with pytest.raises(ValueError, match="`band_widths`"):
    ht.band_statistics(e[0], x, (0.1, -0.2))
  with pytest.raises(ValueError, match="`w` must be a non-zero vector"):
    ht.band_statistics(jnp.zeros(3), x, (0.1,))
  with pytest.raises(ValueError, match="`degree` must be <= 4"):
    ht.band_statistics(e[0], x, (0.1,), band_degree=5)
