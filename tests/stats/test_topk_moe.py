"""Top-K sparse softmax gating Gaussian MoE (arXiv 2309.13850) against oracles.

Oracles: numpyro's ``MixtureSameFamily`` (the dense softmax MoE at K = k), a per-point NumPy brute force of the
top-K softmax, the closed-form least-squares MLE at k = 1, and the MLE property ``ℓ(Ĝ) ≥ ℓ(G*)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro import distributions as dist

from toolkit.stats import topk_moe as tm

TRUTH = {
  "gate_bias": [0.5, 0.0, -0.5, 0.2],
  "gate_weight": [[-2.0, 0.5], [0.0, 1.0], [2.0, -0.3], [0.7, -1.5]],
  "expert_weight": [[-1.0, 0.3], [0.5, 0.0], [2.0, 1.0], [0.0, -1.0]],
  "expert_bias": [1.0, -1.0, 0.5, 0.0],
  "variance": [0.3, 0.2, 0.4, 0.25],
}


@pytest.fixture
def params():
  return tm.topk_moe_params(**TRUTH)


def _x(key, n, d=2):
  return jax.random.uniform(key, (n, d), minval=-1, maxval=1)


def brute_force_gates(p, x, num_selected):
  """Per point, in float64 NumPy: sort β1ᵀx, keep the K largest (ties: lower index), softmax of β1ᵀx + β0."""
  p = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
  out = np.zeros((len(x), len(p["gate_bias"])))
  for n, xn in enumerate(np.asarray(x, np.float64)):
    scores = p["gate_weight"] @ xn
    keep = np.argsort(-scores, kind="stable")[:num_selected]
    logits = scores[keep] + p["gate_bias"][keep]
    out[n, keep] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  return out


@pytest.mark.parametrize("num_selected", [1, 2, 3, 4])
def test_gates_match_brute_force(params, key, num_selected):
  x = _x(key, 300)
  gates = np.exp(np.asarray(tm.gating_log_weights(params, x, num_selected=num_selected), np.float64))
  np.testing.assert_allclose(gates, brute_force_gates(params, x, num_selected), atol=1e-6)
  assert np.all((gates > 0).sum(1) == num_selected)


def test_dense_equals_softmax_moe(params, key):
  """K = k: the density is numpyro's mixture of Normals with softmax(β1ᵀx + β0) weights."""
  kx, ky = jax.random.split(key)
  x = _x(kx, 200)
  y = 2 * jax.random.normal(ky, (200,))
  logits = x @ params.gate_weight.T + params.gate_bias
  means = x @ params.expert_weight.T + params.expert_bias
  oracle = dist.MixtureSameFamily(
    dist.Categorical(logits=logits), dist.Normal(means, jnp.sqrt(params.variance) * jnp.ones_like(means))
  ).log_prob(y)
  np.testing.assert_allclose(tm.log_density(params, x, y, num_selected=4), oracle, rtol=1e-5, atol=1e-5)


def test_sparse_density_brute_force(params, key):
  kx, ky = jax.random.split(key)
  x = _x(kx, 100)
  y = jax.random.normal(ky, (100,))
  gates = brute_force_gates(params, x, 2)
  means = np.asarray(x, np.float64) @ np.asarray(params.expert_weight, np.float64).T + np.asarray(params.expert_bias)
  var = np.asarray(params.variance, np.float64)
  normal = np.exp(-0.5 * (np.asarray(y)[:, None] - means) ** 2 / var) / np.sqrt(2 * np.pi * var)
  np.testing.assert_allclose(tm.log_density(params, x, y, num_selected=2), np.log((gates * normal).sum(1)), atol=1e-5)


def test_sampled_expert_frequencies(params, key):
  """At fixed x, the experts' frequencies among 20,000 draws are the top-K softmax (5 standard errors)."""
  x0 = jnp.array([[0.6, -0.2], [-0.8, 0.9], [0.1, -0.9]])
  m = 20_000
  draw = tm.sample(key, params, jnp.repeat(x0, m, axis=0), num_selected=2)
  expert = np.asarray(draw.expert).reshape(3, m)
  gates = brute_force_gates(params, x0, 2)
  for r in range(3):
    freq = np.bincount(expert[r], minlength=4) / m
    se = np.sqrt(gates[r] * (1 - gates[r]) / m) + 1e-12
    assert np.all(np.abs(freq - gates[r]) <= 5 * se), (freq, gates[r])
    assert np.all(freq[gates[r] == 0] == 0)


def test_sampled_responses_given_expert(params, key):
  x0 = jnp.array([[0.6, -0.2]])
  m = 20_000
  draw = tm.sample(key, params, jnp.repeat(x0, m, axis=0), num_selected=2)
  mean = np.asarray(x0 @ params.expert_weight.T + params.expert_bias)[0]
  for j in np.unique(np.asarray(draw.expert)):
    yj = np.asarray(draw.y)[np.asarray(draw.expert) == j]
    assert abs(yj.mean() - mean[j]) < 5 * np.sqrt(params.variance[j] / yj.size)
    assert abs(yj.var() / params.variance[j] - 1) < 0.1


def test_jit_vmap_grad(params, key):
  x = _x(key, 50)
  y = jnp.linspace(-2, 2, 50)
  f = lambda p: tm.log_likelihood(p, x, y, num_selected=2)
  f_jit = jax.jit(f)
  np.testing.assert_allclose(f_jit(params), f(params), rtol=1e-6)
  draw = jax.jit(lambda k: tm.sample(k, params, x, num_selected=2).y)
  keys = jax.random.split(key, 3)
  np.testing.assert_allclose(jax.vmap(draw)(keys), np.stack([draw(k) for k in keys]), rtol=1e-6)
  g = jax.jit(jax.grad(f))(params)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
  # Gradient of the selected logits by finite differences on β0 (the mask does not move with β0).
  eps = 1e-3
  e = jnp.zeros(4).at[1].set(eps)
  fd = f_jit(params._replace(gate_bias=params.gate_bias + e)) - f_jit(params._replace(gate_bias=params.gate_bias - e))
  np.testing.assert_allclose(g.gate_bias[1], fd / (2 * eps), rtol=2e-2, atol=1e-4)


def test_weights_drop_points(params, key):
  x = _x(key, 40)
  y = tm.sample(key, params, x, num_selected=2).y
  w = (jnp.arange(40) < 25).astype(jnp.float32)
  ll = jax.jit(tm.log_likelihood, static_argnames="num_selected")
  np.testing.assert_allclose(
    ll(params, x, y, num_selected=2, weights=w), ll(params, x[:25], y[:25], num_selected=2), rtol=1e-6
  )


def test_single_expert_fit_is_least_squares(key, x64):
  """k = K = 1: the MLE is ordinary least squares with σ = RSS / n (float64, so the optimum is resolved to 1e-6)."""
  kx, ke = jax.random.split(key)
  x = _x(kx, 500)
  y = x @ jnp.array([1.5, -0.5]) + 0.3 + 0.7 * jax.random.normal(ke, (500,))
  init = tm.topk_moe_params([0.0], [[0.0, 0.0]], [[0.0, 0.0]], [0.0], [1.0])
  out = tm.fit(x, y, init, num_selected=1, num_steps=50, tol=1e-9)
  design = np.c_[np.asarray(x, np.float64), np.ones(500)]
  coef, rss, *_ = np.linalg.lstsq(design, np.asarray(y, np.float64), rcond=None)
  np.testing.assert_allclose(out.params.expert_weight[0], coef[:2], atol=1e-6)
  np.testing.assert_allclose(out.params.expert_bias[0], coef[2], atol=1e-6)
  np.testing.assert_allclose(out.params.variance[0], rss[0] / 500, rtol=1e-6)
  assert float(out.grad_norm) < 1e-5


@pytest.mark.slow
def test_fit_beats_truth_and_recovers_it(key):
  """The MLE's likelihood is at least the truth's on the same data, and the fit lands near the truth."""
  truth = tm.topk_moe_params([0.5, 0.0, -0.5], [[-2.0], [0.0], [2.0]], [[-1.0], [0.5], [2.0]], [1.0, -1.0, 0.5],
                             [0.3, 0.2, 0.4])  # fmt: skip
  kx, ky, kf = jax.random.split(key, 3)
  x = _x(kx, 4000, 1)
  y = tm.sample(ky, truth, x, num_selected=2).y
  out = tm.fit_restarts(kf, x, y, truth, num_selected=2, num_restarts=2, num_steps=60)
  assert out.log_likelihood >= tm.log_likelihood(truth, x, y, num_selected=2) - 1e-6
  np.testing.assert_allclose(out.params.expert_weight, truth.expert_weight, atol=0.25)
  np.testing.assert_allclose(out.params.expert_bias, truth.expert_bias, atol=0.2)
  np.testing.assert_allclose(out.params.variance, truth.variance, rtol=0.2)


@pytest.mark.slow
def test_fit_vmap_equals_loop_and_other_optimizer(key):
  truth = tm.topk_moe_params([0.0, 0.0], [[2.0], [-2.0]], [[1.0], [-1.0]], [0.5, -0.5], [0.1, 0.1])
  x = _x(key, 300, 1)
  ys = jax.vmap(lambda k: tm.sample(k, truth, x, num_selected=2).y)(jax.random.split(key, 2))
  fit = lambda y: tm.fit(x, y, truth, num_selected=2, num_steps=20, optimizer=optax.adam(1e-2))
  batched = jax.vmap(fit)(ys)
  for i in range(2):
    np.testing.assert_allclose(batched.log_likelihood[i], fit(ys[i]).log_likelihood, rtol=1e-5)
  assert bool(jnp.all(batched.log_likelihood > tm.log_likelihood(truth, x, ys[0], num_selected=2) - 1.0))


def test_bad_input(params):
  x = jnp.zeros((5, 2))
  with pytest.raises(ValueError, match="num_selected"):
    tm.log_density(params, x, jnp.zeros(5), num_selected=5)
  with pytest.raises(ValueError, match="num_selected"):
    tm.sample(jax.random.key(0), params, x, num_selected=0)
  with pytest.raises(ValueError, match="`x`"):
    tm.log_density(params, jnp.zeros((5, 3)), jnp.zeros(5), num_selected=2)
  with pytest.raises(ValueError, match="`y`"):
    tm.log_density(params, x, jnp.zeros(4), num_selected=2)
  with pytest.raises(ValueError, match="expert_weight"):
    tm.topk_moe_params([0.0], [[0.0]], [[0.0, 1.0]], [0.0], [1.0])
  with pytest.raises(TypeError, match="TopKMoEParams"):
    tm.log_density(tuple(params), x, jnp.zeros(5), num_selected=2)
  with pytest.raises(ValueError, match="num_restarts"):
    tm.fit_restarts(jax.random.key(0), x, jnp.zeros(5), params, num_selected=2, num_restarts=0)
  with pytest.raises(TypeError, match="optimizer"):
    tm.fit(x, jnp.zeros(5), params, num_selected=2, optimizer="adam")
  with pytest.raises(ValueError, match="`num_steps` must be a positive int"):
    tm.fit(x, jnp.zeros(5), params, num_selected=2, num_steps=0)
  with pytest.raises(ValueError, match="`params.variance` must be > 0"):
    tm.topk_moe_params([0.0, 0.0], [[1.0], [-1.0]], [[0.0], [0.0]], [1.0, -1.0], [1.0, -0.5])


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_checks_and_helpers(params):
  x = jnp.zeros((5, 2))
  with pytest.raises(TypeError, match="`params` must be a TopKMoEParams"):
    tm.check_params(tuple(params))
  with pytest.raises(ValueError, match=r"`x` must have shape \(n, d\) with d = 2"):
    tm.expert_log_densities(params, jnp.zeros((5, 3)), jnp.zeros(5))
  with pytest.raises(ValueError, match=r"`y` must have shape \(n,\) = \(5,\)"):
    tm.expert_log_densities(params, x, jnp.zeros(1))  # used to broadcast silently
  with pytest.raises(ValueError, match="`num_selected`"):
    tm.gating_log_weights(params, x, num_selected=5)
  with pytest.raises(ValueError, match="`x` must have shape"):
    tm.gating_log_weights(params, jnp.zeros(2), num_selected=2)
  with pytest.raises(ValueError, match=r"`weights` must have shape \(n,\)"):
    tm.log_likelihood(params, x, jnp.zeros(5), num_selected=2, weights=jnp.ones(4))
  with pytest.raises(TypeError, match="`scale` must be a real number"):
    tm.perturb(jax.random.key(0), params, "0.1")
  with pytest.raises(ValueError, match="`scale` must be finite and >= 0"):
    tm.perturb(jax.random.key(0), params, float("nan"))
  with pytest.raises(TypeError, match="`params` must be a TopKMoEParams"):
    tm.perturb(jax.random.key(0), tuple(params), 0.1)
  with pytest.raises(ValueError, match="`num_selected`"):
    tm.top_k_mask(jnp.zeros(3), 4)
  with pytest.raises(ValueError, match="`scores` must have a last axis"):
    tm.top_k_mask(jnp.zeros(()), 1)
  # A traced scale is not read at trace time.
  noisy = jax.vmap(lambda s: tm.perturb(jax.random.key(0), params, s))(jnp.array([0.0, 0.1]))
  np.testing.assert_array_equal(noisy.gate_bias[0], params.gate_bias)
