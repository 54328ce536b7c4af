"""PaRIS against the Kalman/RTS smoother, the exact backward kernel, autodiff of the Kalman likelihood and the
`particles` library."""

import functools
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.smc import paris, resampling, ssm
from toolkit.smc import particle_gibbs as pg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTICLES_PYTHON = os.path.join(REPO, ".venv-particles", "bin", "python")


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def lgssm(T=51, seed=0):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(seed), model, T)
  out = ssm.kalman_smoother(model, ys)
  m, cross = out.smoothed_means[:, 0], out.smoothed_cross_covs[:, 0, 0]
  truth = {
    "lag_product": float(jnp.sum(m[:-1] * m[1:] + cross)),
    "sum_x": float(jnp.sum(m)),
    "log_likelihood": float(out.log_likelihood),
  }
  return model, ys, truth


def replicate(fn, n_reps, seed=1):
  return jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n_reps))


def test_estimates_match_the_rts_smoother(x64):
  model, ys, truth = lgssm()
  fn = lambda k: paris.paris(k, model, ys, lambda xp, x, t: jnp.stack([lag_product(xp, x, t), x[0]]), num_particles=256)
  out = replicate(fn, 40)
  est = np.asarray(out.estimate)
  se = est.std(0) / np.sqrt(len(est))
  assert abs(est[:, 0].mean() - truth["lag_product"]) < 4 * se[0] + 0.5  # + the O(1/N) bias at N = 256
  assert abs(est[:, 1].mean() - truth["sum_x"]) < 4 * se[1] + 0.2
  # log Ẑ is unbiased for Z on the natural scale; on the log scale it sits slightly below log Z (Jensen).
  ll = np.asarray(out.log_likelihood)
  assert truth["log_likelihood"] - 1.0 < ll.mean() < truth["log_likelihood"] + 4 * ll.std() / np.sqrt(len(ll))


@pytest.mark.slow
def test_bias_shrinks_with_n_and_k1_degenerates(x64):
  """The self-normalised bias is O(1/N) and clearly negative at N = 16; K = 1 has a larger variance than K = 2."""
  model, ys, truth = lgssm(T=101)
  stats = {}
  for n, k in [(16, 2), (256, 2), (64, 1), (64, 2)]:
    est = (
      np.asarray(
        replicate(
          lambda key: paris.paris(key, model, ys, lag_product, num_particles=n, num_backward=k),  # noqa: B023
          100,
        ).estimate
      )
      - truth["lag_product"]
    )
    stats[(n, k)] = (est.mean(), est.std(), est.std() / 10)
  bias16, _, se16 = stats[(16, 2)]
  assert bias16 + 3 * se16 < 0
  assert abs(stats[(256, 2)][0]) < abs(bias16) / 3
  assert stats[(64, 1)][1] > 1.15 * stats[(64, 2)][1]


def ffbsm_lag_product(rng, ys, num_particles, replicates, a=0.9, q=0.5, r=1.0):
  """Forward-only FFBSm (Del Moral, Doucet & Singh 2010) of Σ x_t x_(t+1) for the scalar LGSSM, in numpy: the same
  bootstrap filter as PaRIS (multinomial resampling at every step), then the exact O(N²) backward expectation
  τ_t^i = Σ_l Λ_t(i, l) (τ_(t-1)^l + ξ_(t-1)^l ξ_t^i) instead of PaRIS's K sampled indices. Vectorised over
  independent replicates."""
  ys = np.asarray(ys, np.float64)[:, 0]
  n = num_particles
  x = rng.standard_normal((replicates, n))  # m0 = 0, P0 = 1
  log_w = -0.5 * (ys[0] - x) ** 2 / r
  tau = np.zeros((replicates, n))
  for y in ys[1:]:
    w = np.exp(log_w - log_w.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    cdf = np.cumsum(w, 1)
    u = rng.random((replicates, n))
    ancestors = np.minimum((u[:, :, None] > cdf[:, None, :]).sum(-1), n - 1)
    x_new = a * np.take_along_axis(x, ancestors, 1) + np.sqrt(q) * rng.standard_normal((replicates, n))
    # Λ(i, l) ∝ w_l m(ξ^l, ξ_new^i)
    logits = np.log(w)[:, None, :] - 0.5 * (x_new[:, :, None] - a * x[:, None, :]) ** 2 / q
    lam = np.exp(logits - logits.max(-1, keepdims=True))
    lam /= lam.sum(-1, keepdims=True)
    tau = np.einsum("bil,bl->bi", lam, tau) + np.einsum("bil,bl->bi", lam, x) * x_new
    x, log_w = x_new, -0.5 * (y - x_new) ** 2 / r
  w = np.exp(log_w - log_w.max(1, keepdims=True))
  return (w * tau).sum(1) / w.sum(1)


@pytest.mark.slow
def test_paris_bias_is_the_bias_of_forward_only_ffbsm(x64):
  """Given the filter, PaRIS's τ is an unbiased draw of the FFBSm backward expectation (by induction over t), so
  both estimators share the filter's O(1/N) bias: at N = 16 it is clearly negative for each, and equal between
  the two within the replicates' standard error."""
  model, ys, truth = lgssm(T=101)
  n, reps = 16, 400
  paris_err = (
    np.asarray(replicate(lambda k: paris.paris(k, model, ys, lag_product, num_particles=n).estimate, reps))
    - truth["lag_product"]
  )
  ffbsm_err = ffbsm_lag_product(np.random.default_rng(0), ys, n, reps) - truth["lag_product"]
  se = lambda e: e.std(ddof=1) / np.sqrt(e.size)
  assert paris_err.mean() < -4 * se(paris_err) and ffbsm_err.mean() < -4 * se(ffbsm_err)
  assert abs(paris_err.mean() - ffbsm_err.mean()) < 3 * np.hypot(se(paris_err), se(ffbsm_err))
  # PaRIS's K = 2 draws add variance to FFBSm's exact backward expectation, never remove it.
  assert paris_err.std() > ffbsm_err.std()


def backward_frequencies(sampler, n_draws=40_000):
  """Empirical Λ(i, ·) of a fixed small cloud, and the exact one."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x_prev = jnp.array([[-1.0], [0.0], [0.4], [1.5], [3.0]])
  lw_prev = jnp.log(jnp.array([0.1, 0.3, 0.2, 0.25, 0.15]))
  x = jnp.array([[0.2], [2.5]])
  draws = jax.jit(jax.vmap(lambda k: sampler(k, model, x_prev, lw_prev, x)))(
    jax.random.split(jax.random.key(0), n_draws // 4)
  )  # (n, 2, 4)
  freq = np.stack([np.bincount(np.asarray(draws[:, i]).ravel(), minlength=5) / draws[:, i].size for i in range(2)])
  logits = lw_prev[None] + ssm.transition_log_prob_matrix(model, x_prev, x, 1)
  return freq, np.asarray(jax.nn.softmax(logits, -1))


NO_ANCESTORS = jnp.zeros(2, jnp.int32)  # the exact and accept-reject kernels do not read them


@pytest.mark.parametrize(
  "sampler",
  [
    lambda k, m, xp, lw, x: paris.backward_exact(k, m, xp, lw, x, NO_ANCESTORS, 1, 4).indices,
    lambda k, m, xp, lw, x: paris.backward_reject(k, m, xp, lw, x, NO_ANCESTORS, 1, 4).indices,
    # One round only: most lanes go through the exact fallback for their rows.
    lambda k, m, xp, lw, x: paris.backward_reject(k, m, xp, lw, x, NO_ANCESTORS, 1, 4, max_rounds=1).indices,
  ],
  ids=["exact", "reject", "reject_fallback"],
)
def test_backward_kernels_draw_from_lambda(sampler, x64):
  freq, exact = backward_frequencies(sampler)
  np.testing.assert_allclose(freq, exact, atol=5 * np.sqrt(0.25 / 40_000))


def test_reject_kernel_agrees_with_exact_kernel(x64):
  model, ys, _truth = lgssm()
  run = lambda backward: np.asarray(
    replicate(lambda k: paris.paris(k, model, ys, lag_product, num_particles=128, backward=backward), 30).estimate
  )
  exact, reject = run(paris.backward_exact), run(paris.backward_reject)
  pooled_se = np.sqrt(exact.var() / 30 + reject.var() / 30)
  assert abs(exact.mean() - reject.mean()) < 4 * pooled_se


def test_guided_proposal_is_consistent_and_lowers_likelihood_variance(x64):
  model, ys, truth = lgssm()
  guided = replicate(
    lambda k: paris.paris(
      k, model, ys, lag_product, num_particles=64, proposal=paris.linear_gaussian_optimal_proposal()
    ),
    40,
  )
  boot = replicate(lambda k: paris.paris(k, model, ys, lag_product, num_particles=64), 40)
  est = np.asarray(guided.estimate)
  assert abs(est.mean() - truth["lag_product"]) < 4 * est.std() / np.sqrt(40) + 2.0
  assert np.std(np.asarray(guided.log_likelihood)) < 0.7 * np.std(np.asarray(boot.log_likelihood))


def test_score_matches_the_gradient_of_the_kalman_likelihood(x64):
  _model, ys, _ = lgssm()

  def model_fn(theta):
    return ssm.linear_gaussian(theta[0], jnp.exp(theta[1]), 1.0, jnp.exp(theta[2]), 0.0, 1.0)

  theta = jnp.array([0.9, jnp.log(0.5), 0.0])
  exact = np.asarray(jax.grad(lambda th: ssm.kalman_smoother(model_fn(th), ys).log_likelihood)(theta))
  est = np.asarray(
    replicate(
      lambda k: paris.paris(k, model_fn(theta), ys, paris.score_functional(model_fn, theta, ys), num_particles=256),
      30,
    ).estimate
  )
  se = est.std(0) / np.sqrt(30)
  np.testing.assert_array_less(np.abs(est.mean(0) - exact), 4 * se + 0.15)


def test_underflowing_weights_stay_finite():
  """Observation noise 1e-6: log g is ~ -1e5 away from the data, far below exp's float32 range."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1e-6, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, 20)
  out = paris.paris(jax.random.key(1), model, ys + 1.0, lag_product, num_particles=32)
  assert np.isfinite(float(out.estimate)) and np.isfinite(float(out.log_likelihood))


def test_same_key_same_result_and_jit_matches(key):
  model, ys, _ = lgssm(T=11)
  run = lambda k: paris.paris(k, model, ys, lag_product, num_particles=16, backward=paris.backward_reject)
  a, b, c = run(key), run(key), jax.jit(run)(key)
  assert float(a.estimate) == float(b.estimate)
  np.testing.assert_allclose(float(a.estimate), float(c.estimate), rtol=1e-5)
  np.testing.assert_allclose(float(a.log_likelihood), float(c.log_likelihood), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(
  not os.path.exists(PARTICLES_PYTHON),
  reason="needs .venv-particles (`make .venv-particles`; `make test` builds it)",
)
def test_agrees_with_the_particles_library(x64):
  model, ys, _truth = lgssm()
  request = {
    "model": {"A": 0.9, "Q": 0.5, "R": 1.0, "m0": 0.0, "P0": 1.0},
    "ys": np.asarray(ys[:, 0]).tolist(),
    "functional": "sum_xx_lag",
    "num_particles": 64,
    "num_backward": 2,
    "num_replicates": 40,
    "seed": 0,
    "resampling": "multinomial",
    "ess_min": 1.0,
  }
  reply = subprocess.run(
    [PARTICLES_PYTHON, os.path.join(REPO, "experiments", "peers", "particles_paris.py")],
    input=json.dumps(request),
    capture_output=True,
    text=True,
    check=True,
    timeout=600,
  )
  theirs = np.asarray(json.loads(reply.stdout)["estimates"])
  ours = np.asarray(replicate(lambda k: paris.paris(k, model, ys, lag_product, num_particles=64), 40).estimate)
  # Same algorithm, same N and K: the same distribution of estimates, bias included.
  assert abs(ours.mean() - theirs.mean()) < 4 * np.sqrt(ours.var() / 40 + theirs.var() / 40)
  assert 0.6 < ours.std() / theirs.std() < 1.6


def test_bad_input_is_rejected(key):
  model, ys, _ = lgssm(T=5)
  with pytest.raises(ValueError, match="num_particles"):
    paris.paris(key, model, ys, lag_product, num_particles=1)
  with pytest.raises(ValueError, match="num_backward"):
    paris.paris(key, model, ys, lag_product, num_particles=8, num_backward=0)
  with pytest.raises(TypeError, match="backward"):  # a kernel is a function, never a name
    paris.paris(key, model, ys, lag_product, num_particles=8, backward="mcmc")
  with pytest.raises(TypeError, match="resampler"):
    paris.paris(key, model, ys, lag_product, num_particles=8, resampler="systematic")
  with pytest.raises(ValueError, match="ess_threshold"):
    paris.paris(key, model, ys, lag_product, num_particles=8, ess_threshold=1.5)
  with pytest.raises(ValueError, match="ys"):
    paris.paris(key, model, ys[:1], lag_product, num_particles=8)
  # One 1-D observation per time: a (T, 3) array would broadcast into a finite, meaningless estimate.
  with pytest.raises(ValueError, match=r"`ys` must have shape \(T, 1\)"):
    paris.paris(key, model, jnp.ones((5, 3)), lag_product, num_particles=8)
  with pytest.raises(TypeError, match="StateSpaceModel"):
    paris.paris(key, "lgssm", ys, lag_product, num_particles=8)
  with pytest.raises(ValueError, match="reference"):
    pg.forward_pass(key, model, ys, lag_product, num_particles=8, reference=jnp.zeros((3, 1)))
  no_bound = model.replace(transition_log_bound=None)
  with pytest.raises(ValueError, match="transition_log_bound"):
    paris.paris(key, no_bound, ys, lag_product, num_particles=8, backward=paris.backward_reject)


def test_a_nan_observation_is_reported_not_swallowed(key):
  model, ys, _ = lgssm(T=6)
  clean = paris.paris(key, model, ys, lag_product, num_particles=8)
  broken = paris.paris(key, model, ys.at[3].set(jnp.nan), lag_product, num_particles=8)
  assert not bool(clean.nan_detected) and np.isfinite(clean.log_likelihood)
  # Resampling after the NaN step makes the later weights finite again: the output must still say what happened.
  assert bool(broken.nan_detected)
  assert np.isnan(broken.log_likelihood) and np.all(np.isnan(np.asarray(broken.estimate)))


def test_an_outlier_observation_is_reported_as_a_collapse(key):
  # y = 1e3 puts all the weight on one particle (the estimate was 18.8 against the Kalman smoother's 989.5).
  model, ys, _ = lgssm(T=6)
  clean = paris.paris(key, model, ys, lag_product, num_particles=64)
  outlier = paris.paris(key, model, ys.at[3].set(1e3), lag_product, num_particles=64)
  assert not bool(clean.collapsed) and float(clean.ess.min()) >= paris.COLLAPSED_ESS
  assert bool(outlier.collapsed) and float(outlier.ess[3]) < paris.COLLAPSED_ESS
  assert not bool(outlier.nan_detected)


# ---------------------------------------------------------------------------------------------------------------
# One step at a time, pluggable kernels, the MCMC backward kernel.


def user_kernel(key, model, x_prev, log_weights_prev, x, ancestors, t, num_backward):
  """A researcher's own backward kernel: here the exact one behind a user-written function."""
  return paris.backward_exact(key, model, x_prev, log_weights_prev, x, ancestors, t, num_backward)


def run_step_by_step(key, model, ys, additive_fn, *, reference=None, **options):
  """``paris.paris``'s key schedule, fed one observation at a time through a jitted ``paris.step``."""
  k_init, k_scan = jax.random.split(key)
  state = paris.init(
    k_init,
    model,
    ys[0],
    additive_fn,
    reference_x0=None if reference is None else reference[0],
    **options,
  )
  step = jax.jit(paris.step)
  for t, k in enumerate(jax.random.split(k_scan, ys.shape[0] - 1), start=1):
    state, info = step(k, state, ys[t], t, reference_x=None if reference is None else reference[t])
  return state, info


@pytest.mark.parametrize(
  "backward",
  [
    paris.backward_exact,
    paris.backward_mcmc,
    functools.partial(paris.backward_reject, max_rounds=8),
  ],
  ids=["exact", "mcmc", "reject"],
)
def test_step_by_step_equals_the_scanned_run(backward, x64):
  """An online smoother fed one observation at a time is the scanned ``paris``, bit for bit."""
  model, ys, _ = lgssm(T=21)
  fn = lambda xp, x, t: jnp.stack([lag_product(xp, x, t), x[0]])
  options = {
    "num_particles": 32,
    "backward": backward,
    "resampler": resampling.systematic,
    "ess_threshold": 0.6,
  }
  key = jax.random.key(4)
  scanned = jax.jit(lambda k: paris.paris(k, model, ys, fn, **options))(key)
  state, _ = run_step_by_step(key, model, ys, fn, **options)
  np.testing.assert_array_equal(np.asarray(paris.smoothed_estimate(state)), np.asarray(scanned.estimate))
  np.testing.assert_array_equal(np.asarray(state.log_likelihood), np.asarray(scanned.log_likelihood))
  np.testing.assert_array_equal(np.asarray(state.particles), np.asarray(scanned.particles))
  np.testing.assert_array_equal(np.asarray(state.log_weights), np.asarray(scanned.log_weights))
  assert 0 < int(np.sum(scanned.resampled)) < 20  # the adaptive rule both resampled and skipped


def test_conditional_step_by_step_equals_the_scanned_forward_pass(x64):
  model, ys, _ = lgssm(T=16)
  reference = jnp.linspace(-1.0, 1.0, 16)[:, None]
  key = jax.random.key(5)
  scanned = jax.jit(lambda k: pg.forward_pass(k, model, ys, lag_product, num_particles=16, reference=reference))(key)
  state, info = run_step_by_step(key, model, ys, lag_product, reference=reference, num_particles=16)
  np.testing.assert_array_equal(np.asarray(paris.smoothed_estimate(state)), np.asarray(scanned.output.estimate))
  np.testing.assert_array_equal(np.asarray(state.log_likelihood), np.asarray(scanned.output.log_likelihood))
  np.testing.assert_array_equal(np.asarray(state.particles), np.asarray(scanned.history.particles[-1]))
  np.testing.assert_array_equal(np.asarray(info.backward_indices), np.asarray(scanned.history.backward_indices[-1]))
  np.testing.assert_array_equal(np.asarray(state.particles[-1]), np.asarray(reference[-1]))
  assert int(info.ancestors[-1]) == 15  # the frozen particle's ancestor is itself


def test_a_user_backward_kernel_plugs_in(x64):
  model, ys, _ = lgssm(T=21)
  key = jax.random.key(6)
  run = lambda backward: jax.jit(lambda k: paris.paris(k, model, ys, lag_product, num_particles=32, backward=backward))(
    key
  )
  np.testing.assert_array_equal(np.asarray(run(user_kernel).estimate), np.asarray(run(paris.backward_exact).estimate))
  reference = jnp.zeros((21, 1))
  csmc = lambda backward: jax.jit(
    lambda k: pg.forward_pass(k, model, ys, lag_product, num_particles=16, backward=backward, reference=reference)
  )(key)
  np.testing.assert_array_equal(
    np.asarray(csmc(user_kernel).output.estimate),
    np.asarray(csmc(paris.backward_exact).output.estimate),
  )


def test_the_default_resampler_is_multinomial(x64):
  """``resampler=`` replaced the hard-coded multinomial of conditional SMC: the default is the old behaviour."""
  model, ys, _ = lgssm(T=11)
  key, reference = jax.random.key(7), jnp.zeros((11, 1))
  run = lambda **kw: pg.forward_pass(key, model, ys, lag_product, num_particles=8, reference=reference, **kw)
  np.testing.assert_array_equal(
    np.asarray(run().output.estimate),
    np.asarray(run(resampler=resampling.multinomial).output.estimate),
  )
  systematic = run(resampler=resampling.systematic)
  assert np.isfinite(float(systematic.output.estimate))
  np.testing.assert_array_equal(np.asarray(systematic.history.particles[:, -1]), np.asarray(reference))


def exact_backward_draws(key, model, x_prev, lw_prev, x):
  """Ancestors drawn exactly from Λ(i, ·) by brute force: the start the MCMC kernel is given in a bootstrap filter."""
  logits = lw_prev[None] + ssm.transition_log_prob_matrix(model, x_prev, x, 1)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def test_mcmc_kernel_leaves_lambda_invariant(x64):
  """Started from an exact draw of Λ(i, ·), every state of the chain is distributed as Λ(i, ·) (brute-force Λ)."""
  n_reps, K = 20_000, 3

  def sampler(k, model, x_prev, lw_prev, x):
    k_start, k_chain = jax.random.split(k)
    start = exact_backward_draws(k_start, model, x_prev, lw_prev, x)
    return paris.backward_mcmc(k_chain, model, x_prev, lw_prev, x, start, 1, K).indices, start

  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x_prev = jnp.array([[-1.0], [0.0], [0.4], [1.5], [3.0]])
  lw_prev = jnp.log(jnp.array([0.1, 0.3, 0.2, 0.25, 0.15]))
  x = jnp.array([[0.2], [2.5]])
  draws, start = jax.jit(jax.vmap(lambda k: sampler(k, model, x_prev, lw_prev, x)))(
    jax.random.split(jax.random.key(0), n_reps)
  )  # (n_reps, 2, K), (n_reps, 2)
  exact = np.asarray(jax.nn.softmax(lw_prev[None] + ssm.transition_log_prob_matrix(model, x_prev, x, 1), -1))
  for k in range(K):
    freq = np.stack([np.bincount(np.asarray(draws[:, i, k]), minlength=5) / n_reps for i in range(2)])
    np.testing.assert_allclose(freq, exact, atol=5 * np.sqrt(0.25 / n_reps))
    assert 0.5 * np.abs(freq - exact).sum(1).max() < 0.02  # total variation per row
  # The chain moves (otherwise invariance would be trivial): a good share of the first states left the start.
  assert np.mean(np.asarray(draws[:, :, 0]) != np.asarray(start)) > 0.2


def test_mcmc_kernel_from_a_wrong_start_is_not_lambda():
  """The oracle has power: one move from a fixed start (particle 0) is far from Λ, so the exact start matters."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x_prev = jnp.array([[-1.0], [0.0], [0.4], [1.5], [3.0]])
  lw_prev = jnp.log(jnp.array([0.1, 0.3, 0.2, 0.25, 0.15]))
  x = jnp.array([[0.2], [2.5]])
  draws = jax.jit(
    jax.vmap(lambda k: paris.backward_mcmc(k, model, x_prev, lw_prev, x, jnp.zeros(2, jnp.int32), 1, 1).indices)
  )(jax.random.split(jax.random.key(0), 4000))
  freq = np.bincount(np.asarray(draws[:, 1, 0]), minlength=5) / 4000
  exact = np.asarray(jax.nn.softmax(lw_prev + ssm.transition_log_prob_matrix(model, x_prev, x, 1)[1]))
  assert 0.5 * np.abs(freq - exact).sum() > 0.1


def test_mcmc_kernel_estimates_match_the_rts_smoother(x64):
  model, ys, truth = lgssm()
  run = lambda backward: replicate(
    lambda k: paris.paris(
      k,
      model,
      ys,
      lambda xp, x, t: jnp.stack([lag_product(xp, x, t), x[0]]),
      num_particles=256,
      backward=backward,
    ),
    40,
  )
  est = np.asarray(run(paris.backward_mcmc).estimate)
  se = est.std(0) / np.sqrt(len(est))
  # The same bounds as the exact kernel's test above (+ the O(1/N) self-normalisation bias at N = 256).
  assert abs(est[:, 0].mean() - truth["lag_product"]) < 4 * se[0] + 0.5
  assert abs(est[:, 1].mean() - truth["sum_x"]) < 4 * se[1] + 0.2
  exact = np.asarray(run(paris.backward_exact).estimate)
  pooled_se = np.sqrt(exact[:, 0].var() / 40 + est[:, 0].var() / 40)
  assert abs(exact[:, 0].mean() - est[:, 0].mean()) < 4 * pooled_se
  # Its variance stays within a factor of the exact kernel's (dependent draws, but no path degeneracy).
  assert est[:, 0].std() < 1.5 * exact[:, 0].std()


def test_bad_kernel_options_are_rejected(key):
  model, ys, _ = lgssm(T=5)
  with pytest.raises(ValueError, match="num_mcmc_steps"):
    paris.paris(
      key,
      model,
      ys,
      lag_product,
      num_particles=8,
      backward=functools.partial(paris.backward_mcmc, num_mcmc_steps=0),
    )
  state = paris.init(key, model, ys[0], lag_product, num_particles=8)
  with pytest.raises(ValueError, match="reference_x"):
    paris.step(key, state, ys[1], 1, reference_x=jnp.zeros(1))
  with pytest.raises(ValueError, match="ess_threshold"):
    paris.init(key, model, ys[0], lag_product, num_particles=8, reference_x0=jnp.zeros(1), ess_threshold=0.5)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_backward_kernels_name_the_argument(key):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x = jax.random.normal(key, (6, 1))
  lw, ancestors = jnp.zeros(6), jnp.arange(6)
  with pytest.raises(ValueError, match="`num_backward` must be an int >= 1"):
    paris.backward_exact(key, model, x, lw, x, ancestors, 1, 0)
  with pytest.raises(ValueError, match=r"`log_weights_prev` must have shape \(6,\)"):
    paris.backward_exact(key, model, x, lw[:1], x, ancestors, 1, 2)  # broadcast silently over the cloud
  with pytest.raises(TypeError, match="`model` must be a toolkit.smc.ssm.StateSpaceModel"):
    paris.backward_exact(key, model.params, x, lw, x, ancestors, 1, 2)
  with pytest.raises(ValueError, match=r"`log_weights_prev` must have shape \(6,\)"):
    paris.backward_reject(key, model, x, lw[:1], x, ancestors, 1, 2)
  with pytest.raises(ValueError, match="`max_rounds` must be an int >= 0"):
    paris.backward_reject(key, model, x, lw, x, ancestors, 1, 2, max_rounds=-1)
  with pytest.raises(ValueError, match="`model.transition_log_bound`"):
    paris.backward_reject(key, model.replace(transition_log_bound=None), x, lw, x, ancestors, 1, 2)
  with pytest.raises(ValueError, match=r"`ancestors` must have shape \(6,\)"):
    paris.backward_mcmc(key, model, x, lw, x, ancestors[:3], 1, 2)
  with pytest.raises(ValueError, match="`num_mcmc_steps`"):
    paris.backward_mcmc(key, model, x, lw, x, ancestors, 1, 2, num_mcmc_steps=0)
  with pytest.raises(ValueError, match=r"`x` must have shape \(N, state_dim\)"):
    paris.backward_mcmc(key, model, x, lw, x[:, 0], ancestors, 1, 2)


def test_bad_input_observations_outputs_and_functionals_name_the_argument(key):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  ys = jnp.zeros((5, 1))
  with pytest.raises(ValueError, match="`ys` must have a leading time axis of length >= 2"):
    paris.check_observations(ys[:1], model)
  with pytest.raises(ValueError, match=r"`ys` must have shape \(T, 1\)"):
    paris.check_observations(jnp.zeros((5, 3)), model)
  with pytest.raises(TypeError, match="`model` must be a toolkit.smc.ssm.StateSpaceModel or None"):
    paris.check_observations(ys, "lgssm")  # was skipped without a word
  state = paris.init(key, model, ys[0], lag_product, num_particles=4)
  state1, info = paris.step(key, state, ys[1], 1)
  with pytest.raises(ValueError, match="`infos` must be the steps' PaRISInfo stacked"):
    paris.collect_output(state, state1, info)  # one step's info, not the scanned stack
  output = paris.paris(key, model, ys, lag_product, num_particles=4)
  with pytest.raises(TypeError, match="`final` must be a PaRISState"):
    paris.collect_output(state, output, jax.tree.map(lambda a: a[None], info))
  with pytest.raises(TypeError, match="`state` must be a PaRISState .* already is the smoothed estimate"):
    paris.smoothed_estimate(output)
  with pytest.raises(TypeError, match="`model_fn` must be a function"):
    paris.score_functional(model, 0.9, ys)  # the model itself, not theta -> model
  with pytest.raises(ValueError, match="`ys` must have a leading time axis"):
    paris.score_functional(lambda a: ssm.linear_gaussian(a, 0.5, 1.0, 1.0, 0.0, 1.0), 0.9, jnp.float32(0.0))
  # paris.linear_gaussian_optimal_proposal() takes no argument: nothing to misuse.
