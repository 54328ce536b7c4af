r"""Data, label noise and oracles for testable learning of halfspaces.

Companion of ``toolkit.stats.halfspace_tester`` (Gollakota, Klivans, Stavropoulos, Vasilyan, "An Efficient
Tester-Learner for Halfspaces", ICLR 2024, arXiv 2302.14853). The paper's target marginal is the standard Gaussian;
its noise models are Massart (each label flips independently with probability η(x) ≤ η < 1/2) and adversarial
(an arbitrary opt-fraction of labels is corrupted). The concrete generators here are our choices, made to exercise
those guarantees:

* ``massart_labels``: η(x) = ``eta`` · 1{|⟨w*, x⟩| > ``margin``} (noise away from the boundary, so the Bayes
  classifier is still sign⟨w*, x⟩ and opt = E η(x)).
* ``adversarial_labels``: a deterministic corruption of exactly an ``opt`` fraction (under the Gaussian) that flips
  the labels of the wedge {0 < ⟨w*, x⟩ < t, ⟨v, x⟩ > 0} ∪ {−t < ⟨w*, x⟩ < 0, ⟨v, x⟩ < 0}: near the origin the
  corrupted labels agree with a halfspace rotated from w* towards v, which pulls a learner off w*.
* ``spike_marginal``: a non-Gaussian marginal that *fools moment matching*: its first coordinate puts mass
  ``spike_mass`` in a narrow spike N(0, s²) at 0 and the rest on c(√(1−λ) G + √λ R) (G standard normal, R a random
  sign), with c and λ solved so that E x₁² = 1 and E x₁⁴ = 3; odd moments vanish by symmetry, so every moment of x
  of degree ≤ 5 equals the standard Gaussian's, while the band {|x₁| ≤ σ} holds several times the Gaussian mass.
  Labels that depend on x₁ then put a large fraction of points at tiny margin, where a small angular error of the
  learner costs a large excess error: exactly what the paper's band tests certify against.

Closed forms (``gaussian_band_mass``, ``spike_band_mass``, ``massart_opt``) are the oracles of the tests.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

from toolkit._checks import is_traced


def _check_count(name: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"`{name}` must be a Python int >= 1, got {value!r}.")


def _check_x(x) -> None:
  if jnp.ndim(x) != 2:
    raise ValueError(f"`x` must have shape (num_samples, dim), got shape {jnp.shape(x)}.")


def _check_direction(x, value, name: str) -> None:
  # A (dim, 1) direction would make x @ w a column and the labels (n, 1), or broadcast them against (n,) later.
  if jnp.shape(value) != jnp.shape(x)[1:]:
    raise ValueError(f"`{name}` must have shape ({jnp.shape(x)[1]},), matching `x`, got shape {jnp.shape(value)}.")


def _check_width(width) -> None:
  # A negative width gives a negative "mass"; NaN fails the test too.
  if not is_traced(width) and not (np.asarray(width, np.float64) >= 0).all():
    raise ValueError(f"`width` must be >= 0, got {width!r}.")


def gaussian(key: jax.Array, num_samples: int, dim: int) -> jax.Array:
  """Samples the target marginal N(0, I_dim), shape ``(num_samples, dim)``."""
  _check_count("num_samples", num_samples)
  _check_count("dim", dim)
  return jax.random.normal(key, (num_samples, dim))


class SpikeParams(NamedTuple):
  """Constants of ``spike_marginal``'s x₁: spike mass p, spike scale s, body scale c, sign variance share λ."""

  spike_mass: float
  spike_scale: float
  body_scale: float
  sign_share: float


def spike_params(spike_mass: float = 0.3, spike_scale: float = 0.05) -> SpikeParams:
  """Solves c and λ so that x₁ of ``spike_marginal`` has E x₁² = 1 and E x₁⁴ = 3.

  With probability p, x₁ = s·G; otherwise x₁ = c(√(1−λ) G + √λ R). Then E x₁² = p s² + (1−p) c² and
  E x₁⁴ = 3 p s⁴ + (1−p) c⁴ (3 − 2λ²) (the body's kurtosis is 3 − 2λ²), solved for c² and λ.

  Raises:
    ValueError: if no λ in [0, 1] matches the fourth moment (``spike_mass`` too large or ``spike_scale`` ≥ 1).
  """
  p, s = float(spike_mass), float(spike_scale)
  if not 0.0 < p < 1.0:
    raise ValueError(f"`spike_mass` must be in (0, 1), got {spike_mass!r}.")
  if not 0.0 < s < 1.0:
    raise ValueError(f"`spike_scale` must be in (0, 1), got {spike_scale!r}.")
  c2 = (1.0 - p * s * s) / (1.0 - p)
  kurtosis = (3.0 - 3.0 * p * s**4) / ((1.0 - p) * c2 * c2)
  lam2 = (3.0 - kurtosis) / 2.0
  if not 0.0 <= lam2 <= 1.0:
    raise ValueError(
      f"`spike_mass`={spike_mass!r} with `spike_scale`={spike_scale!r} cannot match the Gaussian fourth moment "
      f"(needs body kurtosis {kurtosis:.3f} in [1, 3]); use a smaller `spike_mass`."
    )
  return SpikeParams(p, s, math.sqrt(c2), math.sqrt(lam2))


def spike_marginal(
  key: jax.Array, num_samples: int, dim: int, *, spike_mass: float = 0.3, spike_scale: float = 0.05
) -> jax.Array:
  """Samples the moment-matched spike marginal (module docstring); coordinates 2..dim are N(0, 1).

  Every moment of degree ≤ 5 equals N(0, I)'s, yet Pr[|x₁| ≤ σ] ≫ 2Φ(σ) − 1 for small σ.

  Args:
    key: PRNG key.
    num_samples: number of points.
    dim: dimension (≥ 1).
    spike_mass: mass p of the spike at x₁ ≈ 0.
    spike_scale: standard deviation s of the spike.

  Returns:
    ``(num_samples, dim)`` array.

  >>> import jax
  >>> x = spike_marginal(jax.random.key(0), 200_000, 2)
  >>> print(round(float((x[:, 0] ** 4).mean()), 1), round(float((abs(x[:, 0]) <= 0.1).mean() / 0.0797), 1))
  3.0 4.0
  """
  _check_count("num_samples", num_samples)
  _check_count("dim", dim)
  prm = spike_params(spike_mass, spike_scale)
  k_g, k_s, k_r, k_rest = jax.random.split(key, 4)
  g = jax.random.normal(k_g, (num_samples,))
  in_spike = jax.random.bernoulli(k_s, prm.spike_mass, (num_samples,))
  sign = jax.random.rademacher(k_r, (num_samples,), dtype=g.dtype)
  body = prm.body_scale * (math.sqrt(1.0 - prm.sign_share) * g + math.sqrt(prm.sign_share) * sign)
  x1 = jnp.where(in_spike, prm.spike_scale * g, body)
  rest = jax.random.normal(k_rest, (num_samples, dim - 1))
  return jnp.concatenate([x1[:, None], rest], axis=1)


def gaussian_band_mass(width) -> jax.Array:
  """Pr[|⟨w, x⟩| ≤ width] = 2Φ(width) − 1 for x ~ N(0, I) and a unit w."""
  _check_width(width)
  return 2.0 * ndtr(jnp.asarray(width)) - 1.0


def spike_band_mass(width, spike_mass: float = 0.3, spike_scale: float = 0.05) -> jax.Array:
  """Pr[|x₁| ≤ width] under ``spike_marginal``, in closed form (a spike plus a two-point mixture of normals)."""
  _check_width(width)
  prm = spike_params(spike_mass, spike_scale)
  width = jnp.asarray(width)
  spike = 2.0 * ndtr(width / prm.spike_scale) - 1.0
  a = prm.body_scale * math.sqrt(1.0 - prm.sign_share)
  b = prm.body_scale * math.sqrt(prm.sign_share)
  body = ndtr((width - b) / a) - ndtr((-width - b) / a)  # the same for the shift −b, by symmetry
  return prm.spike_mass * spike + (1.0 - prm.spike_mass) * body


def massart_flip_probability(x: jax.Array, w_star: jax.Array, *, eta: float = 0.2, margin: float = 0.3) -> jax.Array:
  """η(x) = ``eta`` · 1{|⟨w*, x⟩| > ``margin``}, shape ``(num_samples,)``."""
  _check_x(x)
  _check_direction(x, w_star, "w_star")
  if not is_traced(eta) and not 0.0 <= float(eta) < 0.5:
    raise ValueError(f"`eta` must be in [0, 1/2) for Massart noise, got {eta!r}.")
  if not is_traced(margin) and not float(margin) >= 0.0:
    raise ValueError(f"`margin` must be >= 0, got {margin!r}.")
  return jnp.where(jnp.abs(x @ w_star) > margin, eta, 0.0)


def massart_labels(
  key: jax.Array, x: jax.Array, w_star: jax.Array, *, eta: float = 0.2, margin: float = 0.3
) -> jax.Array:
  """Labels sign⟨w*, x⟩ flipped independently with probability η(x) (``massart_flip_probability``).

  Args:
    key: PRNG key.
    x: ``(num_samples, dim)`` points.
    w_star: ``(dim,)`` true normal vector.
    eta: the Massart bound η < 1/2.
    margin: no flips within this distance of the boundary.

  Returns:
    ``(num_samples,)`` labels in {−1, +1} (float).
  """
  _check_x(x)
  if not 0.0 <= float(eta) < 0.5:
    raise ValueError(f"`eta` must be in [0, 1/2) for Massart noise, got {eta!r}.")
  clean = jnp.where(x @ w_star >= 0, 1.0, -1.0)
  flip = jax.random.bernoulli(key, massart_flip_probability(x, w_star, eta=eta, margin=margin))
  return jnp.where(flip, -clean, clean)


def massart_opt(eta: float = 0.2, margin: float = 0.3) -> float:
  """opt = E η(x) = eta · 2(1 − Φ(margin)) under the Gaussian: the error of w*, the Bayes classifier."""
  if not (0 <= eta < 0.5 and margin >= 0):
    raise ValueError(f"`eta` must be in [0, 1/2) and `margin` >= 0, got eta={eta!r}, margin={margin!r}.")
  return float(eta * 2.0 * (1.0 - ndtr(margin)))


def adversarial_labels(x: jax.Array, w_star: jax.Array, v: jax.Array, *, opt: float = 0.05) -> jax.Array:
  """Labels sign⟨w*, x⟩ with the wedge of mass ``opt`` (under the Gaussian) flipped; see the module docstring.

  The wedge's depth is t = Φ⁻¹(1/2 + opt), so that Pr[0 < ⟨w*, x⟩ < t] = opt for x ~ N(0, I) and unit w*;
  ``v`` must be a unit vector orthogonal to ``w_star``. The corruption is deterministic given x.
  """
  _check_x(x)
  _check_direction(x, w_star, "w_star")
  _check_direction(x, v, "v")
  if not 0.0 < float(opt) < 0.5:
    raise ValueError(f"`opt` must be in (0, 1/2), got {opt!r}.")
  if not (is_traced(w_star) or is_traced(v)):
    # The wedge has mass opt only for unit w* and a unit v orthogonal to it.
    w64, v64 = np.asarray(w_star, np.float64), np.asarray(v, np.float64)
    for name, norm in (("w_star", np.linalg.norm(w64)), ("v", np.linalg.norm(v64))):
      if not abs(norm - 1.0) <= 1e-3:
        raise ValueError(f"`{name}` must be a unit vector, got norm {norm:.6g}.")
    if not abs(w64 @ v64) <= 1e-3:
      raise ValueError(f"`v` must be orthogonal to `w_star`, got ⟨w_star, v⟩ = {w64 @ v64:.6g}.")
  t = ndtri(0.5 + opt)
  s, u = x @ w_star, x @ v
  clean = jnp.where(s >= 0, 1.0, -1.0)
  flip = ((s > 0) & (s < t) & (u > 0)) | ((s < 0) & (s > -t) & (u < 0))
  return jnp.where(flip, -clean, clean)


def error_rate(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Empirical 0-1 error Pr[sign⟨w, x⟩ ≠ y] (sign 0 counts as +1)."""
  _check_x(x)
  if jnp.shape(w) != jnp.shape(x)[1:] or jnp.shape(y) != jnp.shape(x)[:1]:
    raise ValueError(
      f"`w` must be (d,) and `y` (n,) for `x` of shape {jnp.shape(x)}, got {jnp.shape(w)} and {jnp.shape(y)}."
    )
  pred = jnp.where(x @ w >= 0, 1.0, -1.0)
  return jnp.mean(pred != y)


def angle(w: jax.Array, w_star: jax.Array) -> jax.Array:
  """Angle θ(w, w*) in radians; under N(0, I) and noiseless labels the error of w is θ/π."""
  if jnp.ndim(w) != 1 or jnp.shape(w_star) != jnp.shape(w):
    raise ValueError(f"`w` and `w_star` must be (d,) vectors of one size, got {jnp.shape(w)} and {jnp.shape(w_star)}.")
  for name, v in (("w", w), ("w_star", w_star)):
    if not isinstance(v, jax.core.Tracer) and not np.any(np.asarray(v)):
      raise ValueError(f"`{name}` must be a non-zero vector (an angle needs a direction), got all zeros.")
  cos = jnp.dot(w, w_star) / (jnp.linalg.norm(w) * jnp.linalg.norm(w_star))
  return jnp.arccos(jnp.clip(cos, -1.0, 1.0))
