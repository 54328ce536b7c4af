"""PPP (arXiv 2003.04372; our reconstruction of its split rule) against scikit-learn.

The pieces are checked exactly: the adjusted Rand index against ``sklearn.metrics.adjusted_rand_score``, the BIC
and log-likelihood of an ott-jax mixture against ``sklearn.mixture.GaussianMixture`` with the same parameters, and
our masked EM against scikit-learn's EM from the same start on the unmasked points. The whole search is checked on
blobs (the true k, labels equal to the truth and to scikit-learn's mixture up to permutation, the same result for
every key, a single blob left whole) and the ``init``/``step`` loop against ``fit`` bit for bit.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from toolkit.cluster import ppp, ppp_data

# The doctest's data and static arguments, so that the compiled fit is shared within a test session.
MAX_CLUSTERS = 6
THREE_BLOBS = (((0.0, 0.0), (9.0, 0.0), (0.0, 9.0)), (1.0, 1.0, 1.0), (50, 50, 50))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjusted_rand_index_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  a, b = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
  b[:20] = a[:20]  # some agreement
  keep = rng.random(40) < 0.7
  got = ppp.adjusted_rand_index(jnp.asarray(a), jnp.asarray(b), 3, jnp.asarray(keep, jnp.float32))
  np.testing.assert_allclose(float(got), adjusted_rand_score(a[keep], b[keep]), atol=1e-5)
  np.testing.assert_allclose(float(ppp.adjusted_rand_index(a, a[::-1] * 0, 3)), adjusted_rand_score(a, 0 * a))
  assert float(ppp.adjusted_rand_index(jnp.zeros(5, int), jnp.zeros(5, int), 2)) == 1.0  # sklearn's convention


def test_bic_and_log_likelihood_match_sklearn(x64):
  x, _ = ppp_data.blobs(jax.random.key(0), ((0.0, 0.0, 0.0), (4.0, 1.0, 0.0)), (1.0, 0.6), (70, 50))
  x = np.asarray(x, np.float64)
  sk = SkGaussianMixture(2, covariance_type="full", random_state=0).fit(x)
  keep = np.arange(len(x)) % 3 != 0

  @jax.jit
  def ours(means, covs, weights, x, keep):
    gmm = ppp.GaussianMixture.from_mean_cov_component_weights(means, covs, weights)
    return ppp.bic(gmm, x), ppp.log_likelihood(gmm, x), ppp.bic(gmm, x, keep)

  bic, loglik, bic_kept = ours(sk.means_, sk.covariances_, sk.weights_, x, keep.astype(np.float64))
  np.testing.assert_allclose(float(bic), sk.bic(x), rtol=1e-10)
  np.testing.assert_allclose(float(loglik), sk.score(x) * len(x), rtol=1e-10)
  np.testing.assert_allclose(float(bic_kept), sk.bic(x[keep]), rtol=1e-10)  # 0/1 weights: the kept points
  assert ppp.num_parameters(2, 3) == sk._n_parameters()


@pytest.mark.parametrize("num_em_steps", [0, 1, 8])
def test_masked_em_matches_sklearn_em_on_the_kept_points(x64, num_em_steps):
  x, y = ppp_data.blobs(jax.random.key(1), ((0.0, 0.0), (3.0, 0.5), (20.0, 20.0)), (1.0, 0.7, 1.0), (60, 40, 30))
  keep = np.asarray(y) < 2  # the far blob is masked out
  start = jax.nn.one_hot((np.asarray(x)[:, 0] > 1.2).astype(int), 2)  # a rough hard partition of the kept points
  reg = 1e-4
  w = jnp.asarray(keep, jnp.float64)
  ours = jax.jit(ppp.fit_em, static_argnames=("num_em_steps", "reg_covar"))(
    x, w, start, num_em_steps=num_em_steps, reg_covar=reg
  )
  first = jax.jit(ppp.m_step, static_argnums=3)(x, w, start, reg)  # the common start: one M step
  sk = SkGaussianMixture(
    2,
    covariance_type="full",
    reg_covar=reg,
    tol=0.0,
    max_iter=max(num_em_steps, 1),
    weights_init=np.asarray(first.component_weights),
    means_init=np.asarray(first.loc),
    precisions_init=np.linalg.inv(np.asarray(first.covariance)),
  )
  if num_em_steps == 0:
    np.testing.assert_allclose(ours.loc, first.loc)
    return
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    sk.fit(np.asarray(x)[keep])
  np.testing.assert_allclose(ours.loc, sk.means_, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(ours.covariance, sk.covariances_, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(ours.component_weights, sk.weights_, rtol=1e-8)


def test_bad_input_errors():
  key = jax.random.key(0)
  x = jnp.zeros((40, 2))
  labels = jnp.zeros(5, jnp.int32)
  with pytest.raises(ValueError, match="`labels_a` and `labels_b` must be \\(n,\\) arrays of one length"):
    ppp.adjusted_rand_index(labels, labels[:4], 2)
  with pytest.raises(ValueError, match="`num_labels` must be a Python int >= 1"):
    ppp.adjusted_rand_index(labels, labels, 0)
  with pytest.raises(ValueError, match="`weights` must have shape"):
    ppp.adjusted_rand_index(labels, labels, 2, jnp.ones(4))
  with pytest.raises(ValueError, match="`responsibilities` \\(n, k\\) with n = 40"):
    ppp.fit_em(x, jnp.ones(40), jnp.full((39, 2), 0.5), num_em_steps=2, reg_covar=1e-6)
  with pytest.raises(ValueError, match="`num_em_steps` must be a Python int >= 0"):
    ppp.fit_em(x, jnp.ones(40), jnp.full((40, 2), 0.5), num_em_steps=-1, reg_covar=1e-6)
  with pytest.raises(ValueError, match="`x` must have shape"):
    ppp.fit(key, jnp.zeros(40))
  with pytest.raises(TypeError, match="floating dtype"):
    ppp.fit(key, jnp.zeros((40, 2), jnp.int32))
  with pytest.raises(TypeError, match="`x` must be an array"):
    ppp.fit(key, [[0.0, 1.0]] * 40)
  with pytest.raises(ValueError, match="`max_clusters` must be a Python int >= 2"):
    ppp.fit(key, x, max_clusters=1)
  with pytest.raises(ValueError, match="`agreement_threshold`"):
    ppp.fit(key, x, agreement_threshold=1.5)
  with pytest.raises(ValueError, match="`confidence_threshold`"):
    ppp.fit(key, x, confidence_threshold=0.2)
  with pytest.raises(ValueError, match="at least 2 \\* min_cluster_size = 12"):
    ppp.fit(key, jnp.zeros((11, 2)))
  with pytest.raises(TypeError, match="`use_bic` must be a bool"):
    ppp.fit(key, x, use_bic=1)
  with pytest.raises(TypeError, match="`key` must be a jax.random key"):
    ppp.fit(0, x)
  with pytest.raises(ValueError, match="`state` must be a PPPState"):
    ppp.step(key, ppp.init(x, max_clusters=4), x, max_clusters=5)


def test_blobs():
  x, y = ppp_data.blobs(jax.random.key(0), *ppp_data.UNEQUAL_2D)
  assert x.shape == (1000, 2) and np.bincount(np.asarray(y)).tolist() == [300, 200, 150, 200, 150]
  means = np.asarray([np.asarray(x)[np.asarray(y) == j].mean(0) for j in range(5)])
  np.testing.assert_allclose(means, ppp_data.UNEQUAL_2D[0], atol=0.35)
  with pytest.raises(ValueError, match="same K clusters"):
    ppp_data.blobs(jax.random.key(0), ((0.0,), (1.0,)), (1.0,), (3, 3))


@pytest.mark.slow
def test_fit_finds_the_blobs_for_every_key():
  x, y = ppp_data.blobs(jax.random.key(3), *THREE_BLOBS)
  outs = [ppp.fit(jax.random.key(s), x, max_clusters=MAX_CLUSTERS) for s in range(3)]
  out = outs[0]
  assert int(out.n_clusters) == 3 and not bool(out.reached_max_clusters)
  assert adjusted_rand_score(y, out.labels) == 1.0
  # scikit-learn's 3-component mixture (given the k that PPP found by itself) makes the same partition.
  sk = SkGaussianMixture(3, covariance_type="full", random_state=0).fit(np.asarray(x))
  assert adjusted_rand_score(sk.predict(np.asarray(x)), out.labels) == 1.0
  # Canonical labels: first appearance order; centroids are the clusters' means.
  assert out.labels[0] == 0 and int(out.labels[50]) == 1 and int(out.labels[100]) == 2
  np.testing.assert_allclose(
    out.centroids[:3], [np.asarray(x)[np.asarray(out.labels) == j].mean(0) for j in range(3)], rtol=1e-5
  )
  trace = out.trace
  assert int(jnp.sum(trace.accepted)) == 2 and int(jnp.sum(trace.node >= 0)) == 5  # 2 splits, 3 final leaves
  acc = np.asarray(trace.accepted)
  assert np.all(np.asarray(trace.bic_two)[acc] < np.asarray(trace.bic_one)[acc])
  assert np.all(np.asarray(trace.agreement)[acc] >= 0.8) and np.all(np.asarray(trace.confidence)[acc] >= 0.9)
  # Same key, same output; other keys, the same partition.
  again = ppp.fit(jax.random.key(0), x, max_clusters=MAX_CLUSTERS)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), out, again)
  for other in outs[1:]:
    np.testing.assert_array_equal(other.labels, out.labels)


@pytest.mark.slow
def test_step_by_hand_equals_fit_and_a_single_blob_stays_whole():
  x, _ = ppp_data.blobs(jax.random.key(3), *THREE_BLOBS)
  key = jax.random.key(7)
  out = ppp.fit(key, x, max_clusters=MAX_CLUSTERS)
  state = ppp.init(x, max_clusters=MAX_CLUSTERS)
  infos = []
  for i in range(2 * MAX_CLUSTERS - 1):
    state, info = ppp.step(jax.random.fold_in(key, i), state, x, max_clusters=MAX_CLUSTERS)
    infos.append(info)
  assert int(state.num_clusters) == int(out.n_clusters)
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *infos)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), stacked, out.trace)
  assert adjusted_rand_score(state.labels, out.labels) == 1.0
  # The null case: one Gaussian blob (same shape, same compiled fit) is never split.
  blob = jax.random.normal(jax.random.key(5), x.shape) * jnp.array([3.0, 1.0])
  single = ppp.fit(key, blob, max_clusters=MAX_CLUSTERS)
  assert int(single.n_clusters) == 1 and np.all(np.asarray(single.labels) == 0)
  assert not bool(single.trace.accepted[0]) and int(single.trace.node[1]) == -1


def _two_component_mixture():
  return ppp.GaussianMixture.from_mean_cov_component_weights(
    jnp.array([[0.0, 0.0], [3.0, 0.0]]), jnp.stack([jnp.eye(2)] * 2), jnp.array([0.5, 0.5])
  )


@pytest.mark.parametrize(
  ("weights", "error", "match"),
  [
    (jnp.ones(5), ValueError, "`weights` must have shape \\(6,\\)"),
    (jnp.ones(6).at[2].set(jnp.nan), ValueError, "`weights` contains NaN"),
    (jnp.ones(6).at[0].set(-1.0), ValueError, "`weights` must be non-negative"),
  ],
)
def test_bad_input_likelihood_and_bic_weights(weights, error, match):
  gmm, x = _two_component_mixture(), jnp.zeros((6, 2))
  with pytest.raises(error, match=match):
    ppp.log_likelihood(gmm, x, weights)
  with pytest.raises(error, match=match):
    ppp.bic(gmm, x, weights)


def test_bad_input_likelihood_bic_and_m_step():
  gmm, x = _two_component_mixture(), jnp.zeros((6, 2))
  with pytest.raises(ValueError, match="`x` must have 2 columns like the mixture `gmm`"):
    ppp.log_likelihood(gmm, jnp.zeros((6, 3)))
  with pytest.raises(ValueError, match="`x` must have shape"):
    ppp.bic(gmm, jnp.zeros(6))
  with pytest.raises(TypeError, match="`gmm` must be an ott-jax GaussianMixture"):
    ppp.bic((jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2)), x)
  with pytest.raises(TypeError, match="`gmm` must be an ott-jax GaussianMixture"):
    ppp.log_likelihood(None, x)
  responsibilities = jnp.full((6, 2), 0.5)
  with pytest.raises(ValueError, match="`reg_covar` must be a finite scalar >= 0"):
    ppp.m_step(x, jnp.ones(6), responsibilities, -1e-6)
  with pytest.raises(ValueError, match="`reg_covar` must be a finite scalar >= 0"):
    ppp.m_step(x, jnp.ones(6), responsibilities, float("nan"))
  with pytest.raises(ValueError, match="`responsibilities` \\(n, k\\) with n = 6"):
    ppp.m_step(x, jnp.ones(6), responsibilities[:5], 1e-6)
  with pytest.raises(ValueError, match="`weights` must have a positive finite sum"):
    ppp.m_step(x, jnp.zeros(6), responsibilities, 1e-6)
  with pytest.raises(TypeError, match="`x` must have a floating dtype"):
    ppp.m_step(jnp.zeros((6, 2), jnp.int32), jnp.ones(6), responsibilities, 1e-6)


@pytest.mark.parametrize(("args", "match"), [((0, 2), "`num_components`"), ((2, 0), "`dim`"), ((2, 1.5), "`dim`")])
def test_bad_input_num_parameters(args, match):
  with pytest.raises(ValueError, match=match):
    ppp.num_parameters(*args)


@pytest.mark.parametrize("dim", [0, -1, 2.0, True])
def test_bad_input_default_min_cluster_size(dim):
  with pytest.raises(ValueError, match="`dim` must be an int >= 1"):
    ppp.default_min_cluster_size(dim)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"dim": 3}, "`dim` must be >= num_clusters = 5"),
    ({"dim": 0}, "`dim` must be an int >= 1"),
    ({"num_clusters": 0}, "`num_clusters` must be an int >= 1"),
    ({"separation": 0.0}, "`separation` must be a scalar > 0"),
    ({"separation": float("nan")}, "`separation` must be a scalar > 0"),
  ],
)
def test_bad_input_high_dim_spec(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ppp_data.high_dim_spec(**kwargs)
