"""A small training function and grid shared by the sweep tests (single device, 8 devices, two processes)."""

import jax
import jax.numpy as jnp

from toolkit import sweep


def train_one(point):
  """Full-batch gradient descent on a random-feature least-squares problem set by the point's key and width."""
  key = jax.random.wrap_key_data(point["key"])
  k_x, k_w, k_v = jax.random.split(key, 3)
  x = jax.random.normal(k_x, (32, 4))
  y = jnp.sin(x[:, 0])
  w_in = jax.random.normal(k_w, (4, 16))
  # Width as a mask over 16 features, so every point has the same shapes.
  features = jnp.tanh(x @ w_in) * (jnp.arange(16) < point["width"])
  v = 0.1 * jax.random.normal(k_v, (16,))

  def step(_, v):
    grad = features.T @ (features @ v - y) / y.shape[0]
    return v - point["lr"] * grad

  v = jax.lax.fori_loop(0, 50, step, v)
  return {"loss": jnp.mean((features @ v - y) ** 2), "weights": v}


def grid(num_seeds=3):
  g = sweep.product_grid(width=[2, 4, 8, 16], lr=[0.05, 0.2], seed=list(range(num_seeds)))
  points = dict(g.points)
  points["key"] = sweep.keys_grid(jax.random.key(0), len(points["seed"]))
  return g, points
