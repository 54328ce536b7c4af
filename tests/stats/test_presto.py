"""PRESTO (arXiv 2305.18700) against oracles: statsmodels' proportional odds, closed-form intercept-only fits,
scipy's BFGS on the unpenalised non-parallel likelihood written another way, scikit-learn's logistic regression,
the lasso's optimality conditions, and brute force for the proximal step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special

from toolkit.stats import ordinal_data, presto


def _data(seed=0, n=400, p=2, slopes=((1.0, -0.5), (1.4, -0.5)), cuts=(-0.5, 1.2)):
  """Non-parallel cumulative-logit data (authors' sign: P(y <= k) = σ(α_k + xᵀβ_k)), numpy float64."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, p))
  beta = np.asarray(slopes, np.float64).T[:p]  # (p, K-1)
  cum = scipy.special.expit(np.asarray(cuts) + x @ beta)
  y = (rng.uniform(size=(n, 1)) > cum).sum(1)
  return x, y.astype(np.int32)


def _nll_numpy(theta, x, y, k1):
  """-mean log-lik of the non-parallel model from class probabilities computed directly (no log-sigmoid tricks)."""
  p = x.shape[1]
  alpha, beta = theta[:k1], theta[k1:].reshape(p, k1)
  cum = scipy.special.expit(alpha + x @ beta)
  cum = np.concatenate([np.zeros((len(y), 1)), cum, np.ones((len(y), 1))], axis=1)
  probs = cum[np.arange(len(y)), y + 1] - cum[np.arange(len(y)), y]
  return -np.mean(np.log(np.maximum(probs, 1e-300)))


def test_huge_difference_penalty_is_proportional_odds(x64):
  from statsmodels.miscmodels.ordinal_model import OrderedModel

  x, y = _data()
  model = presto.fit(x, y, lam=1e6, penalize_first=False, tol=1e-10)
  res = OrderedModel(y, x, distr="logit").fit(method="bfgs", disp=False, maxiter=2000, gtol=1e-9)
  b_sm = res.params[: x.shape[1]]
  thresholds = OrderedModel(y, x, distr="logit").transform_threshold_params(res.params)[1:-1]
  assert bool(model.converged)
  np.testing.assert_array_equal(np.asarray(model.differences[:, 1:]), 0.0)  # exactly parallel
  # statsmodels: P(y <= k) = F(θ_k - xᵀb) -> α = θ, β = -b.
  np.testing.assert_allclose(np.asarray(model.coef), np.repeat(-b_sm[:, None], 2, axis=1), atol=2e-5)
  np.testing.assert_allclose(np.asarray(model.intercepts), thresholds, atol=2e-5)
  po = presto.fit_proportional_odds(x, y, tol=1e-10)
  np.testing.assert_allclose(np.asarray(po.coef), np.asarray(model.coef), atol=1e-9)


def test_huge_penalty_is_intercept_only(x64):
  x, y = _data(seed=1)
  model = presto.fit(x, y, lam=1e6, tol=1e-12)
  np.testing.assert_array_equal(np.asarray(model.coef), 0.0)
  cum_freq = np.cumsum(np.bincount(y, minlength=3))[:-1] / len(y)
  np.testing.assert_allclose(np.asarray(model.intercepts), scipy.special.logit(cum_freq), atol=1e-7)


def test_zero_penalty_is_unpenalised_nonparallel_mle(x64):
  x, y = _data(seed=2)
  model = presto.fit(x, y, lam=0.0, tol=1e-10)
  k1 = 2
  start = np.concatenate([np.asarray(presto.fit(x, y, lam=1e6).intercepts), np.zeros(x.shape[1] * k1)])
  res = scipy.optimize.minimize(_nll_numpy, start, args=(x, y, k1), method="BFGS", options={"gtol": 1e-10})
  assert bool(model.converged)
  np.testing.assert_allclose(np.asarray(model.intercepts), res.x[:k1], atol=1e-4)
  np.testing.assert_allclose(np.asarray(model.coef), res.x[k1:].reshape(-1, k1), atol=1e-4)
  assert abs(float(model.objective) - res.fun) < 1e-9
  # The fitted slopes differ across thresholds (the data are not proportional odds): a real non-parallel fit.
  assert float(jnp.max(jnp.abs(model.differences[:, 1]))) > 0.1


def test_logistic_matches_sklearn(x64):
  from sklearn.linear_model import LogisticRegression

  x, y = _data(seed=3)
  yb = (y == 2).astype(np.int32)
  model = presto.fit_logistic(x, yb, tol=1e-10)
  sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, yb)
  np.testing.assert_allclose(np.asarray(presto.predict_proba(model, x)[:, 1]), sk.predict_proba(x)[:, 1], atol=1e-6)
  np.testing.assert_allclose(-np.asarray(model.coef[:, 0]), sk.coef_[0], atol=1e-4)


def test_prox_is_exact_minimiser_of_its_subproblem():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(3, 2))
  a = rng.normal(size=2)
  factors = np.array([[0.0, 1.0]] * 3)
  lam, step = 0.7, 0.9
  a_out, psi_out = presto.prox(jnp.asarray(a), jnp.asarray(v), lam, jnp.asarray(factors), step)
  np.testing.assert_allclose(np.asarray(a_out), a, rtol=1e-6)  # intercepts are not penalised
  for (j, k), vj in np.ndenumerate(v):
    res = scipy.optimize.minimize_scalar(
      lambda z, vj=vj, w=factors[j, k]: 0.5 * (z - vj) ** 2 + step * lam * w * abs(z), bounds=(-5, 5),
      method="bounded", options={"xatol": 1e-10},
    )  # fmt: skip
    assert abs(float(psi_out[j, k]) - res.x) < 1e-6
  # Exact zeros where |v| <= threshold, untouched where the factor is 0.
  np.testing.assert_array_equal(np.asarray(psi_out)[np.abs(v) <= step * lam * factors], 0.0)
  np.testing.assert_allclose(np.asarray(psi_out)[:, 0], v[:, 0], rtol=1e-6)


def test_solution_satisfies_lasso_optimality(x64):
  x, y = _data(seed=4, p=3, slopes=((1.0, -0.5, 0.0), (1.6, -0.5, 0.3)))
  lam = 0.01
  model = presto.fit(x, y, lam=lam, tol=1e-11)
  problem = presto.make_problem(x, y, lam=lam)
  psi = model.differences * problem.scale[:, None]  # back on the standardised scale of the penalty
  alpha = model.intercepts + problem.mean @ model.coef
  g_alpha, g_psi = jax.grad(presto._smooth)((alpha, psi), problem)
  np.testing.assert_allclose(np.asarray(g_alpha), 0.0, atol=1e-6)
  nonzero = np.asarray(psi) != 0
  assert 0 < nonzero.sum() < psi.size  # some but not all coefficients are set to zero
  np.testing.assert_allclose(np.asarray(g_psi)[nonzero], -lam * np.sign(np.asarray(psi))[nonzero], atol=1e-6)
  assert np.all(np.abs(np.asarray(g_psi)[~nonzero]) <= lam + 1e-6)


@pytest.mark.slow
def test_path_warm_starts_match_cold_fits_and_lambda_max(x64):
  x, y = _data(seed=5)
  path = presto.fit_path(x, y, num_lambdas=4, lambda_min_ratio=0.05, tol=1e-11)
  np.testing.assert_allclose(np.asarray(path.differences[0]), 0.0, atol=1e-7)  # λ_max: all penalised ψ are 0
  lam_max = float(path.lam[0])
  assert np.any(np.asarray(presto.fit(x, y, lam=0.97 * lam_max, tol=1e-11).differences) != 0)
  for i in (1, 3):
    cold = presto.fit(x, y, lam=float(path.lam[i]), tol=1e-11)
    np.testing.assert_allclose(np.asarray(path.coef[i]), np.asarray(cold.coef), atol=1e-6)


def test_step_by_hand_jit_and_vmap(x64):
  x, y = _data(seed=6, n=200)
  x = jnp.asarray(x)
  model = presto.fit(x, y, lam=0.02, num_classes=3)
  problem = presto.make_problem(x, y, lam=0.02, num_classes=3)
  state = presto.init(problem)
  for _ in range(int(model.num_iterations)):
    state = jax.jit(presto.step)(problem, state)
  by_hand = presto.to_model(problem, state)
  # Same iterations; equal up to rounding (the loop is compiled as one program in `fit`).
  np.testing.assert_allclose(np.asarray(by_hand.coef), np.asarray(model.coef), atol=1e-9)
  assert bool(by_hand.converged)
  jitted = jax.jit(lambda x, y, lam: presto.fit(x, y, lam=lam, num_classes=3))(x, y, 0.02)
  np.testing.assert_allclose(np.asarray(jitted.coef), np.asarray(model.coef), atol=1e-9)
  x2, y2 = _data(seed=7, n=200)
  xs, ys = jnp.stack([x, jnp.asarray(x2)]), jnp.stack([jnp.asarray(y), jnp.asarray(y2)])
  batched = jax.vmap(lambda a, b: presto.fit(a, b, lam=0.02, num_classes=3))(xs, ys)
  second = presto.fit(xs[1], ys[1], lam=0.02, num_classes=3)
  np.testing.assert_allclose(np.asarray(batched.coef[1]), np.asarray(second.coef), atol=1e-7)


def test_predict_proba_and_crossing():
  model = presto.PrestoModel(jnp.array([0.0, 2.0]), jnp.array([[1.0, -2.0]]), 0.0, 0.0, 0, True)  # β = (1, -1)
  x = jnp.array([[-1.0], [0.0], [3.0]])
  probs = presto.predict_proba(model, x)
  np.testing.assert_allclose(np.asarray(probs.sum(1)), 1.0, rtol=1e-6)
  assert bool(jnp.all(probs >= 0))
  s = scipy.special.expit
  np.testing.assert_allclose(np.asarray(probs[1]), [s(0.0), s(2.0) - s(0.0), 1 - s(2.0)], rtol=1e-6)
  assert presto.crossing(model, x).tolist() == [False, False, True]
  # Crossing row: the cumulative probabilities σ(3), σ(-1) are sorted before differencing.
  np.testing.assert_allclose(np.asarray(probs[2]), [s(-1.0), s(3.0) - s(-1.0), 1 - s(3.0)], rtol=1e-5)


@pytest.mark.slow
def test_cross_validation_picks_largest_lambda_with_min_brier(key):
  data = ordinal_data.sparse_differences(key, intercepts=(0.0, 1.0, 2.5), num_samples=300, num_features=3)
  cv = presto.cross_validate(key, data.x, data.y, num_lambdas=6, num_folds=3)
  mean = np.asarray(cv.mean_brier)
  assert int(cv.best_index) == int(np.flatnonzero(mean == mean.min())[0])
  np.testing.assert_allclose(mean, np.asarray(cv.fold_brier).mean(0), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(cv.model.coef), np.asarray(cv.path.coef[cv.best_index]))
  # Fold 0's held-out Brier score recomputed directly from a weighted fit on the other folds.
  folds = np.asarray(presto.fold_ids(key, 300, 3))
  assert sorted(np.bincount(folds).tolist()) == [100, 100, 100]
  lam = float(cv.lambdas[2])
  path0 = presto.fit_path(data.x, data.y, lambdas=cv.lambdas, weights=(folds != 0).astype(np.float32))
  p = np.asarray(presto.predict_proba(jax.tree.map(lambda a: a[2], path0), data.x))[folds == 0]
  onehot = np.eye(4)[np.asarray(data.y)[folds == 0]]
  assert abs(float(cv.lambdas[2]) - lam) == 0
  np.testing.assert_allclose(float(cv.fold_brier[0, 2]), ((p - onehot) ** 2).sum(1).mean(), rtol=1e-4)


def test_bad_inputs():
  x, y = _data(n=20)
  with pytest.raises(TypeError, match="`y` must hold integer"):
    presto.fit(x, y.astype(np.float32), lam=0.1)
  with pytest.raises(ValueError, match="`y` must hold labels in 0..1"):
    presto.fit(x, y, lam=0.1, num_classes=2)
  with pytest.raises(ValueError, match="`lam` must be a finite scalar >= 0"):
    presto.fit(x, y, lam=-1.0)
  with pytest.raises(ValueError, match="`x` must have shape"):
    presto.fit(x[:, 0], y, lam=0.1)
  with pytest.raises(ValueError, match="`y` must have shape"):
    presto.fit(x, y[:-1], lam=0.1)
  with pytest.raises(TypeError, match="`num_classes` must be given"):
    jax.jit(lambda a, b: presto.fit(a, b, lam=0.1))(x, y)
  with pytest.raises(ValueError, match="`num_folds` must be an int >= 2"):
    presto.cross_validate(jax.random.key(0), x, y, num_folds=1)
  with pytest.raises(ValueError, match="`lambda_min_ratio`"):
    presto.lambda_path(1.0, 5, 0.0)
  with pytest.raises(ValueError, match="`x` must be finite, got 1 non-finite"):
    presto.fit(np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), y, lam=0.1)
  for bad in (-np.ones(20), np.zeros(20), np.full(20, np.inf)):
    with pytest.raises(ValueError, match="`weights` (must be non-negative|must have a positive finite sum)"):
      presto.fit(x, y, lam=0.1, weights=bad)
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    presto.make_problem(x, y, lam=0.1, weights=-np.ones(20))


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_fits_name_the_argument():
  x, y = _data(n=20)  # labels 0..2
  with pytest.raises(ValueError, match="`y` must hold labels in 0..1"):
    presto.fit_logistic(x, y)
  with pytest.raises(ValueError, match="`num_classes` must be an int >= 2"):
    presto.fit_proportional_odds(x, y, num_classes=1)
  with pytest.raises(ValueError, match="`num_iterations` must be an int >= 1"):
    presto.lambda_max(x, y, num_iterations=0)
  with pytest.raises(ValueError, match="`weights` must have shape"):
    presto.lambda_max(x, y, weights=np.ones(19))
  with pytest.raises(ValueError, match="`lambdas` must be a 1-D"):
    presto.fit_path(x, y, lambdas=np.ones((2, 2)))
  with pytest.raises(ValueError, match="`lambdas` must be finite and >= 0"):
    presto.fit_path(x, y, lambdas=[1.0, -0.1])


def test_bad_input_solver_pieces_name_the_argument():
  x, y = _data(n=20)
  problem = presto.make_problem(x, y, lam=0.1)  # p = 2, K - 1 = 2
  state = presto.init(problem)
  other = presto.init(presto.make_problem(x[:, :1], y, lam=0.1))  # a state of another problem (p = 1)
  with pytest.raises(TypeError, match="`problem` must be a PrestoProblem"):
    presto.null_intercepts(state)
  with pytest.raises(ValueError, match=r"`intercepts` must have shape \(K-1,\) = \(2,\)"):
    presto.init(problem, intercepts=jnp.zeros(1))
  with pytest.raises(ValueError, match=r"`psi` must have shape \(p, K-1\) = \(2, 2\)"):
    presto.init(problem, psi=jnp.zeros((3, 2)))
  with pytest.raises(TypeError, match="`problem` must be a PrestoProblem"):
    presto.step(state, problem)  # arguments swapped
  with pytest.raises(ValueError, match="`state` must hold"):
    presto.step(problem, other)
  with pytest.raises(ValueError, match="`state` must hold"):
    presto.run(problem, other, 10)
  with pytest.raises(ValueError, match="`num_iterations` must be an int >= 0"):
    presto.run(problem, state, -1)
  with pytest.raises(TypeError, match="`state` must be a PrestoState"):
    presto.to_model(problem, presto.to_model(problem, state))  # a model is not a state
  with pytest.raises(ValueError, match="`state` must hold"):
    presto.to_model(problem, other)


def test_bad_input_prox_and_prediction_name_the_argument():
  with pytest.raises(ValueError, match="`threshold` must be >= 0"):
    presto.soft_threshold(jnp.ones(3), -0.5)  # would push entries away from zero
  with pytest.raises(ValueError, match="`lam` must be a finite scalar >= 0"):
    presto.prox(jnp.zeros(2), jnp.ones((3, 2)), -1.0, jnp.ones((3, 2)), 0.5)
  with pytest.raises(ValueError, match="`step_size` must be a scalar > 0"):
    presto.prox(jnp.zeros(2), jnp.ones((3, 2)), 0.1, jnp.ones((3, 2)), 0.0)
  model = presto.PrestoModel(jnp.array([0.0, 2.0]), jnp.array([[1.0, -2.0]]), 0.0, 0.0, 0, True)  # p = 1, K = 3
  with pytest.raises(ValueError, match="`x` must have shape"):
    presto.cumulative_logits(model.intercepts, model.coef, jnp.ones(1))  # one point without its batch axis
  with pytest.raises(ValueError, match="`intercepts` must have shape"):
    presto.cumulative_logits(jnp.zeros(1), model.coef, jnp.ones((2, 1)))  # would broadcast over 2 thresholds
  with pytest.raises(ValueError, match=r"`x` must have shape \(n, 1\)"):
    presto.predict_cumulative(model, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match=r"`x` must have shape \(n, 1\)"):
    presto.crossing(model, jnp.ones(2))
  with pytest.raises(ValueError, match=r"`x` must have shape \(n, 1\)"):
    presto.predict_proba(model, jnp.ones((2, 3)))


def test_bad_input_brier_score_and_folds_name_the_argument():
  probs = jnp.full((3, 2), 0.5)
  with pytest.raises(TypeError, match="`y` must hold integer labels"):
    presto.brier_score(probs, jnp.array([0.0, 1.0, 1.0]))  # one_hot of floats: silently the wrong score
  with pytest.raises(ValueError, match=r"`y` must lie in \[0, 2\)"):
    presto.brier_score(probs, jnp.array([0, 1, 2]))
  with pytest.raises(ValueError, match=r"`y` must have shape \(n,\) = \(3,\)"):
    presto.brier_score(probs, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="`probs` must have shape"):
    presto.brier_score(probs[0], jnp.array(0))
  with pytest.raises(ValueError, match="`weights` must have shape"):
    presto.brier_score(probs, jnp.array([0, 1, 1]), jnp.ones(2))
  with pytest.raises(ValueError, match="`weights` must have a positive finite sum"):
    presto.brier_score(probs, jnp.array([0, 1, 1]), jnp.zeros(3))
  with pytest.raises(ValueError, match="`num_folds` must be an int >= 1"):
    presto.fold_ids(jax.random.key(0), 10, 0)  # `% 0`
  with pytest.raises(ValueError, match="`num_samples` must be an int >= 1"):
    presto.fold_ids(jax.random.key(0), 10.0, 2)
