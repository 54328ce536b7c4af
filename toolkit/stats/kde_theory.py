r"""Closed forms for Gaussian-kernel density estimation of Gaussian data in large dimension.

Biroli & Mézard, "Kernel Density Estimators in Large Dimensions" (arXiv 2408.05807, 2024). The data are
``y_i ~ N(0, σ² I_d)``, ``i = 1..n``, the estimate at a fresh point ``x ~ N(0, σ² I_d)`` is
``ρ̂_h(x) = (1/n) Σ_i N(x | y_i, h² I_d)``, and ``n`` and ``d`` grow together with ``α = (log n)/d`` fixed.
The paper finds three regimes of the bandwidth: the central limit theorem holds for ``h > h_CLT(α)``; between
``h_G(α)`` and ``h_CLT(α)`` the estimate has heavy-tailed (α-stable) fluctuations; below ``h_G(α)`` a few data points
dominate the sum (extreme-value statistics); and the Kullback-Leibler-optimal bandwidth lies below ``h_CLT``.

What is ours. The abstract states the three regimes and the position of the KL optimum; the formulas below are
our own large-deviation derivation (the sum is a Random-Energy-Model partition function), not read from the
paper's body, whose notation may differ:

* Weighting the data by ``z^m`` with ``z = N(x | y, h² I)`` tilts each coordinate of ``y`` to a Gaussian of
  precision ``a_m = 1 + m σ²/h²``; the rate (per dimension) at which such points are rare is the Kullback-Leibler
  divergence of the tilted law from the data law, averaged over a typical ``x`` (``|x|² = d σ²``):
  ``I_m(h) = ½ [log a_m − (a_m − 1)/a_m²]``.
* The ``m``-th moment of the sum is carried by points present in the database iff ``α > I_m(h)``. Hence
  ``h_G`` solves ``I_1(h) = α`` (condensation: the points that carry the mean are absent) and ``h_CLT`` solves
  ``I_2(h) = α`` (the second moment is carried by absent points). ``I_m`` depends on ``m/h²`` only, so
  ``h_CLT = √2 h_G`` and the stable index of the kernel terms at the top of the database is
  ``μ(h) = (h / h_G)²`` (``μ < 1``: a few points dominate; ``1 < μ < 2``: α-stable; ``μ ≥ 2``: Gaussian).
* At leading order in ``d``, ``(1/d) KL(ρ ‖ ρ̂_h)`` equals the annealed value ``½[log(1 + t) − t/(1 + t)]``
  (``t = h²/σ²``, the KL to ``E ρ̂_h = N(0, (σ² + h²) I)``) for ``h ≥ h_G``, and below ``h_G`` the nearest data point
  dominates: ``α + u/(2t) + ½ log t − ½`` with ``u = σ⁻² |x − y_nearest|²/d = 1/a + 1/a²`` (``a = a_1(h_G)``). This
  leading-order curve is minimised at ``h_KL = h_G √(1 − 1/a²) < h_G``, inside the condensed regime; at the sizes a
  computer reaches (``n ≈ 6·10⁴``, ``d`` = 37..110) the measured optimum lies between ``h_KL`` and ``h_G``
  (finite-``d`` corrections are of order ``log(d)/d``).
* :func:`naive_clt_bandwidth` is the threshold a naive (annealed) variance argument gives, ``n = E[z²]/E[z]²``; it
  is not the paper's and serves as a control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

_BISECTION_STEPS = 80


def _positive_and_finite(value) -> bool:
  """Whether a concrete ``value`` (any shape) is finite and > 0 everywhere; a traced one passes (unreadable)."""
  if _checks.is_traced(value):
    return True
  v = np.asarray(value, np.float64)
  return bool((np.isfinite(v) & (v > 0)).all())


def _check_scale(scale) -> None:
  if not _positive_and_finite(scale):
    raise ValueError(f"`scale` must be > 0 and finite, got {scale}.")


def _check_alpha(alpha) -> None:
  # The bisections would return a finite threshold for alpha <= 0 or NaN, which no n and d give.
  if not _positive_and_finite(alpha):
    raise ValueError(f"`alpha` must be > 0 and finite (alpha = log(n)/d), got {alpha}.")


def _rate_of_precision(a: jax.Array) -> jax.Array:
  return 0.5 * (jnp.log(a) - (a - 1.0) / a**2)


def rate_function(bandwidth, order=1.0, *, scale=1.0) -> jax.Array:
  """The rate ``I_m(h) = ½[log a − (a − 1)/a²]``, ``a = 1 + m σ²/h²``, of the points that carry ``E[z^m]``.

  Args:
    bandwidth: ``h > 0``, any shape.
    order: the moment ``m > 0`` (broadcasts with ``bandwidth``).
    scale: the data's standard deviation ``σ``.

  Returns:
    ``I_m(h)`` (per dimension); ``α > I_m(h)`` iff the ``m``-th moment of the kernel sum is self-averaging.

  >>> round(float(rate_function(1.0, 2.0)), 4)
  0.4382
  """
  _check_scale(scale)
  _checks.check_positive(bandwidth, "bandwidth", scalar=False)
  _checks.check_positive(order, "order", scalar=False)
  h = jnp.asarray(bandwidth, dtype=float)
  return _rate_of_precision(1.0 + jnp.asarray(order, dtype=h.dtype) * (scale / h) ** 2)


def _critical_precision(alpha: jax.Array) -> jax.Array:
  """Solves ``½[log a − (a − 1)/a²] = α`` for ``a > 1`` by bisection on ``log(a − 1)`` (the rate is increasing)."""
  alpha = jnp.asarray(alpha, dtype=float)
  # ½ log a − 1/8 ≤ rate(a), so a = exp(2α + ¼) + 1 is above the root.
  lo = jnp.full_like(alpha, -40.0)
  hi = 2.0 * alpha + 0.25  # log(a - 1)

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = _rate_of_precision(1.0 + jnp.exp(mid)) > alpha
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, body, (lo, hi))
  return 1.0 + jnp.exp(0.5 * (lo + hi))


def h_glass(alpha, *, scale=1.0) -> jax.Array:
  """The condensation threshold ``h_G(α)``: below it a few data points dominate ``ρ̂_h(x)`` (``I_1(h_G) = α``).

  Args:
    alpha: ``α = (log n)/d > 0``, any shape.
    scale: the data's standard deviation ``σ``.

  Returns:
    ``h_G(α) = σ / √(a − 1)`` with ``½[log a − (a − 1)/a²] = α``.

  >>> round(float(h_glass(0.4)), 3), round(float(h_clt(0.4)), 3)
  (0.745, 1.054)
  """
  _check_alpha(alpha)
  _check_scale(scale)
  return scale / jnp.sqrt(_critical_precision(alpha) - 1.0)


def h_clt(alpha, *, scale=1.0) -> jax.Array:
  """The central-limit threshold ``h_CLT(α) = √2 h_G(α)`` (``I_2(h_CLT) = α``); above it ``ρ̂_h(x)`` is Gaussian."""
  return jnp.sqrt(2.0) * h_glass(alpha, scale=scale)


def tail_index(bandwidth, alpha, *, scale=1.0) -> jax.Array:
  """The stable index ``μ(h) = (h/h_G(α))²`` of the kernel terms at the top of a database of ``n = e^{αd}`` points.

  ``μ < 1``: extreme-value regime; ``1 < μ < 2``: α-stable fluctuations; ``μ ≥ 2``: the CLT holds.
  """
  _checks.check_positive(bandwidth, "bandwidth", scalar=False)
  _check_alpha(alpha)
  _check_scale(scale)
  return (jnp.asarray(bandwidth, dtype=float) / h_glass(alpha, scale=scale)) ** 2


def h_kl(alpha, *, scale=1.0) -> jax.Array:
  """The minimiser ``h_G √(1 − 1/a²)`` of the leading-order KL curve :func:`asymptotic_kl_per_dim` (ours)."""
  _check_alpha(alpha)
  _check_scale(scale)
  a = _critical_precision(alpha)
  return h_glass(alpha, scale=scale) * jnp.sqrt(1.0 - 1.0 / a**2)


def annealed_kl_per_dim(bandwidth, *, scale=1.0) -> jax.Array:
  """``(1/d) KL(N(0, σ²I) ‖ N(0, (σ² + h²)I)) = ½[log(1 + t) − t/(1 + t)]``, ``t = h²/σ²``: the KL to ``E ρ̂_h``."""
  _check_scale(scale)
  _checks.check_positive(bandwidth, "bandwidth", scalar=False)
  t = (jnp.asarray(bandwidth, dtype=float) / scale) ** 2
  return 0.5 * (jnp.log1p(t) - t / (1.0 + t))


def asymptotic_kl_per_dim(bandwidth, alpha, *, scale=1.0) -> jax.Array:
  """Leading-order ``(1/d) KL(ρ ‖ ρ̂_h)`` as ``d → ∞`` at fixed ``α``: annealed above ``h_G``, nearest point below.

  Args:
    bandwidth: ``h > 0``, any shape.
    alpha: ``α = (log n)/d``.
    scale: the data's standard deviation ``σ``.

  Returns:
    The KL per dimension (continuous at ``h_G``, minimal at :func:`h_kl`).
  """
  _checks.check_positive(bandwidth, "bandwidth", scalar=False)
  _check_alpha(alpha)
  _check_scale(scale)
  h = jnp.asarray(bandwidth, dtype=float)
  a = _critical_precision(alpha)
  u = 1.0 / a + 1.0 / a**2
  t = (h / scale) ** 2
  condensed = alpha + u / (2.0 * t) + 0.5 * jnp.log(t) - 0.5
  return jnp.where(h >= h_glass(alpha, scale=scale), annealed_kl_per_dim(h, scale=scale), condensed)


def log_mean_density(points, bandwidth, *, scale=1.0) -> jax.Array:
  """``log E_D ρ̂_h(x) = log N(x | 0, (σ² + h²) I)`` for data ``N(0, σ² I)``; points ``(m, d)`` → ``(m,)``."""
  _check_scale(scale)
  x = jnp.asarray(points)
  if x.ndim != 2:
    raise ValueError(f"`points` must have shape (m, d), got {x.shape}.")
  var = scale**2 + jnp.asarray(bandwidth, dtype=x.dtype) ** 2
  d = x.shape[1]
  return -0.5 * jnp.sum(x**2, axis=1) / var - 0.5 * d * jnp.log(2.0 * jnp.pi * var)


def _naive_exponent(h: jax.Array) -> jax.Array:
  """``(1/d) log(E[z²]/E[z]²)`` at a typical ``x`` (``σ = 1``)."""
  s = h**2
  return -0.5 * jnp.log1p(2.0 / s) + jnp.log1p(1.0 / s) - 1.0 / (s + 2.0) + 1.0 / (s + 1.0)


def naive_clt_bandwidth(alpha, *, scale=1.0) -> jax.Array:
  """The bandwidth where the annealed relative variance ``E[z²]/(n E[z]²)`` reaches 1: a naive CLT threshold.

  Not the paper's threshold (it ignores that ``E[z²]`` is carried by points absent from the database); the
  experiment uses it as a control that must miss the measured threshold.
  """
  _check_alpha(alpha)
  _check_scale(scale)
  alpha = jnp.asarray(alpha, dtype=float)
  lo, hi = jnp.full_like(alpha, -10.0), jnp.full_like(alpha, 10.0)  # log h; the exponent decreases in h

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = _naive_exponent(jnp.exp(mid)) > alpha
    return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

  lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, body, (lo, hi))
  return scale * jnp.exp(0.5 * (lo + hi))
