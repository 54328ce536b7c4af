"""The class-conditional score network: its trainer learns the exact score of noised Gaussians."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.models import score_net
from toolkit.smc import fkc

VP = fkc.VPSchedule()
MEANS = jnp.array([[1.0, -1.0], [-1.5, 0.5]])  # class c: N(MEANS[c], STD² I)
STD = 0.5


def sample_data(key, labels):
  return MEANS[labels] + STD * jax.random.normal(key, labels.shape + (2,))


def exact_score(x, t, label):
  """∇ log N(x; α m, (α² s² + σ²) I)."""
  alpha, sigma = VP.alpha(t), VP.sigma(t)
  return -(x - alpha * MEANS[label]) / (alpha**2 * STD**2 + sigma**2)


def test_learned_score_approaches_the_exact_one(key):
  net = score_net.ScoreNet(hidden=64, depth=2, num_classes=2)
  params = score_net.init_params(jax.random.fold_in(key, 0), net, 2)
  out = score_net.train(
    jax.random.fold_in(key, 1),
    params,
    net,
    optax.adam(3e-3),
    sample_data,
    VP,
    num_steps=1500,
    batch_size=256,
    t_min=1e-3,
  )
  assert out.losses.shape == (1500,)
  assert float(out.losses[-100:].mean()) < float(out.losses[:100].mean())
  x = jax.random.normal(jax.random.fold_in(key, 2), (256, 2))
  for label in (0, 1):
    for t in (0.3, 0.6):
      want = exact_score(x, t, label)
      trained = score_net.score_fn(net, out.params, VP, label)(x, t)
      untrained = score_net.score_fn(net, params, VP, label)(x, t)
      err = float(jnp.linalg.norm(trained - want) / jnp.linalg.norm(want))
      err0 = float(jnp.linalg.norm(untrained - want) / jnp.linalg.norm(want))
      assert err < 0.15 and err < 0.3 * err0, (label, t, err, err0)


def test_sample_times_cover_both_scales(key):
  t = np.asarray(score_net.sample_times(key, 20_000, 1e-3))
  assert t.min() >= 1e-3 and t.max() <= 1.0
  # Half log-uniform: a quarter of all draws below √t_min ≈ 0.03; uniform alone would give 3%.
  np.testing.assert_allclose(np.mean(t < np.sqrt(1e-3)), 0.25 + 0.5 * (np.sqrt(1e-3) - 1e-3) / (1 - 1e-3), atol=0.01)


def test_bad_inputs(key):
  net = score_net.ScoreNet(hidden=8, depth=1, num_classes=2)
  params = score_net.init_params(key, net, 2)
  with pytest.raises(ValueError, match="`num_steps`"):
    score_net.train(key, params, net, optax.adam(1e-3), sample_data, VP, num_steps=0, batch_size=4, t_min=1e-3)
  with pytest.raises(TypeError, match="`optimizer`"):
    score_net.train(key, params, net, "adam", sample_data, VP, num_steps=2, batch_size=4, t_min=1e-3)
  with pytest.raises(ValueError, match="`dim`"):
    score_net.init_params(key, net, 0)


def test_bad_inputs_score_fn_sample_times_and_dsm_loss(key):
  net = score_net.ScoreNet(hidden=8, depth=1, num_classes=2)
  params = score_net.init_params(key, net, 2)
  x = jnp.ones((3, 2))
  # A label outside the classes, or a float one, one-hot encoded to zeros: the score of no class, silently.
  for label in (2, -1):
    with pytest.raises(ValueError, match=r"`label` must lie in \[0, 2\)"):
      score_net.score_fn(net, params, VP, label)
  with pytest.raises(TypeError, match="`label` must be an integer"):
    score_net.score_fn(net, params, VP, 0.5)
  with pytest.raises(TypeError, match="`schedule`"):
    score_net.score_fn(net, params, "vp", 0)
  with pytest.raises(TypeError, match="`net`"):
    score_net.score_fn(net.apply, params, VP, 0)
  # A traced label (one compilation for every class, as the FKC experiment runs it) is the caller's to keep in range.
  traced = jax.jit(lambda c: score_net.score_fn(net, params, VP, c)(x, 0.5))
  np.testing.assert_allclose(traced(1), score_net.score_fn(net, params, VP, 1)(x, 0.5), rtol=1e-6)
  for batch_size in (0, 4.0):
    with pytest.raises(ValueError, match="`batch_size`"):
      score_net.sample_times(key, batch_size, 1e-3)
  for t_min in (0.0, -0.1, 1.0, np.nan):  # 0 samples t = 0 (σ = 0); >= 1 samples outside (t_min, 1)
    with pytest.raises(ValueError, match="`t_min` must lie in"):
      score_net.sample_times(key, 4, t_min)
  with pytest.raises(ValueError, match="`batch_size`"):
    score_net.dsm_loss(params, key, net, sample_data, VP, batch_size=0, t_min=1e-3)
  with pytest.raises(ValueError, match="`t_min`"):
    score_net.dsm_loss(params, key, net, sample_data, VP, batch_size=4, t_min=0.0)
  with pytest.raises(TypeError, match="`sample_data`"):
    score_net.dsm_loss(params, key, net, MEANS, VP, batch_size=4, t_min=1e-3)
  # x0 of shape (B,) used to broadcast to (B, B) against the times and give a loss.
  with pytest.raises(ValueError, match=r"`sample_data` must return x0 of shape \(batch_size, d\)"):
    score_net.dsm_loss(params, key, net, lambda k, c: sample_data(k, c)[:, 0], VP, batch_size=4, t_min=1e-3)
  with pytest.raises(TypeError, match="`net`"):
    score_net.dsm_loss(params, key, "net", sample_data, VP, batch_size=4, t_min=1e-3)
