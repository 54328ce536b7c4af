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
