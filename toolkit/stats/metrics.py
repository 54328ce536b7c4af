"""Statistics of weighted samples and distances between a sample and a target.

* :func:`weighted_moments`: the self-normalised mean and covariance of weighted particles (an SMC output).
* :func:`moment_errors`: relative errors of the first two moments against exact ones.
* :func:`energy_distance`: Székely & Rizzo's energy distance between two equally weighted samples
  (G. J. Székely and M. L. Rizzo, "Energy statistics: A class of statistics based on distances", Journal of
  Statistical Planning and Inference 143(8), 2013, eq. (2.1)).

>>> import jax
>>> from toolkit.stats import metrics
>>> x = jax.random.normal(jax.random.key(0), (512, 2))
>>> print(bool(metrics.energy_distance(x, x + 3.0) > 1.0), abs(float(metrics.energy_distance(x, x))) < 1e-5)
True True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.smc import resampling


@jax.jit
def weighted_moments(particles: jax.Array, log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Self-normalised mean ``(d,)`` and covariance ``(d, d)`` of particles ``(N, d)`` with log-weights ``(N,)``.

  ``mean = Σ w_i x_i``, ``cov = Σ w_i (x_i - mean)(x_i - mean)ᵀ`` with ``w = softmax(log_weights)`` (the biased,
  "population" covariance of the weighted sample).

  >>> import jax.numpy as jnp
  >>> mean, cov = weighted_moments(jnp.array([[0.0], [2.0]]), jnp.log(jnp.array([1.0, 3.0])))
  >>> print(round(float(mean[0]), 4), round(float(cov[0, 0]), 4))
  1.5 0.75
  """
  w = jnp.exp(resampling.normalize_log_weights(log_weights))
  mean = w @ particles
  centred = particles - mean
  return mean, (w[:, None] * centred).T @ centred


def moment_errors(mean, cov, target_mean, target_cov) -> dict[str, float]:
  """Relative errors of the first two moments, ``E[x]`` and ``E[xxᵀ]``, and of the covariance (float64, numpy).

  ``mean_error = ‖μ̂ - μ‖ / √E|x|²`` (relative to the root mean square, as μ may be 0),
  ``second_moment_error = ‖M̂₂ - M₂‖_F / ‖M₂‖_F`` with ``M₂ = E[xxᵀ] = Σ + μμᵀ``, ``moment_error`` the larger of
  the two, and ``cov_error = ‖Σ̂ - Σ‖_F / ‖Σ‖_F`` (noisier where Σ is small next to M₂).

  Args:
    mean: ``(d,)`` estimated mean.
    cov: ``(d, d)`` estimated covariance.
    target_mean: ``(d,)`` exact mean.
    target_cov: ``(d, d)`` exact covariance.

  Returns:
    A dict with ``mean_error``, ``second_moment_error``, ``cov_error`` and ``moment_error``.

  >>> import numpy as np
  >>> errs = moment_errors(np.array([1.2, 0.0]), 1.1 * np.eye(2), np.array([1.0, 0.0]), np.eye(2))
  >>> print(round(errs["cov_error"], 6))
  0.1
  """
  m, c = np.asarray(target_mean, np.float64), np.asarray(target_cov, np.float64)
  mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
  if mean.shape != m.shape or cov.shape != c.shape or c.shape != m.shape * 2:
    raise ValueError(
      f"`mean`, `cov`, `target_mean`, `target_cov` must have shapes (d,), (d, d), (d,), (d, d), got "
      f"{mean.shape}, {cov.shape}, {m.shape}, {c.shape}."
    )
  m2, m2_hat = c + np.outer(m, m), cov + np.outer(mean, mean)
  mean_err = float(np.linalg.norm(mean - m) / np.sqrt(np.trace(m2)))
  second_err = float(np.linalg.norm(m2_hat - m2) / np.linalg.norm(m2))
  cov_err = float(np.linalg.norm(cov - c) / np.linalg.norm(c))
  return {
    "mean_error": mean_err,
    "second_moment_error": second_err,
    "cov_error": cov_err,
    "moment_error": max(mean_err, second_err),
  }


@jax.jit
def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """Energy distance ``2E|X - Y| - E|X - X'| - E|Y - Y'|`` of two equally weighted samples ``(n, d)``, ``(m, d)``.

  The squared MMD of the distance kernel (Székely & Rizzo 2013): a metric on distributions with a first moment,
  with no bandwidth to tune and no iterative solver. Computed as a V-statistic (the diagonal pairs included), so
  it is biased up by O(1/n): compare against the distance between two exact samples of the same size. Memory
  ``O(n m d)``.

  >>> import jax.numpy as jnp
  >>> print(round(float(energy_distance(jnp.zeros((3, 2)), jnp.tile(jnp.array([3.0, 4.0]), (3, 1)))), 4))
  10.0
  """
  if jnp.ndim(x) != 2 or jnp.ndim(y) != 2 or jnp.shape(x)[1] != jnp.shape(y)[1]:
    raise ValueError(f"`x` and `y` must have shapes (n, d) and (m, d), got {jnp.shape(x)} and {jnp.shape(y)}.")

  def mean_dist(a, b):
    return jnp.mean(jnp.sqrt(jnp.maximum(jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, -1), 1e-30)))

  return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
