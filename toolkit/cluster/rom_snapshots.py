r"""Snapshots of parametrised 1-D PDEs solved in JAX, for the local reduced-order bases of ``rom_cluster``.

The test problems of our reproduction of Daniel, Casenave, Akkari, Ketata, Ryckelynck, "Physics-informed cluster
analysis and a priori efficiency criterion for the construction of local reduced-order bases", J. Comput. Phys.
2022, arXiv 2103.13683. The paper's five problems are industrial solid-mechanics and fluid cases; these two small
ones are ours (research notes §6), chosen so that the solution manifold has a slowly decaying Kolmogorov N-width
and a sign or scale variation, the situation where the paper's angle-based dissimilarity matters.

* **Advection of a pulse** on the periodic unit interval: ``u_t + c u_x = 0``, ``u(x, 0) = A exp(-(x - μ)² / w²)``
  (periodised). :func:`solve_advection` advances any initial condition by the exact Fourier shift
  ``û_k(t) = û_k(0) exp(-2πi k c t)``, which is exact for band-limited data; :func:`advection_exact` is the shifted
  pulse in closed form, its oracle.
* **Viscous Burgers** on the periodic interval [0, 2π): ``u_t + (u²/2)_x = ν u_xx``. :func:`solve_burgers` is a
  conservative finite-volume scheme (MUSCL reconstruction with the minmod limiter, Rusanov flux, centred viscous
  flux, SSP Runge-Kutta 3), so ``Σ u dx`` is conserved to rounding. :func:`burgers_cole_hopf` is the closed-form
  periodic solution ``u = 2νa e^{-νt} sin x / (1 + a e^{-νt} cos x)`` (Cole-Hopf of the heat solution
  ``1 + a e^{-νt} cos x``), its oracle.

:func:`advection_snapshots` and :func:`burgers_snapshots` draw parameters and return the snapshot matrix (one row
per parameter). The Burgers family reports the field with a random sign and scale ``s ∈ ±[s_min, s_max]`` (our
choice, a stand-in for a change of loading direction or units): two snapshots ``u`` and ``s u`` span the same
line, so a reduced basis needs one vector for both, which the sine dissimilarity sees and the Euclidean distance
does not.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp


class PDESnapshots(NamedTuple):
  """Snapshots of a parametrised PDE.

  Attributes:
    snapshots: ``(n, num_points)`` solutions at the final time, one row per parameter.
    params: ``(n, p)`` the parameters of each row (columns named in the generator's docstring).
    grid: ``(num_points,)`` the cell centres.
  """

  snapshots: jax.Array
  params: jax.Array
  grid: jax.Array


def _check_count(name: str, value, minimum: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"`{name}` must be a Python int >= {minimum}, got {value!r}.")


def _check_positive(name: str, value) -> None:
  if isinstance(value, (int, float)) and not value > 0:
    raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def _check_nonnegative(name: str, value) -> None:
  # A count of steps is computed from these in Python: a negative or NaN one would give a silently unstable count.
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")


def _check_range(name: str, value) -> tuple[float, float]:
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise ValueError(f"`{name}` must be a pair 0 < low <= high, got {value!r}.")
  lo, hi = value
  if not (0 < lo <= hi):
    raise ValueError(f"`{name}` must be a pair 0 < low <= high, got {value!r}.")
  return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------
# Advection.


def periodic_grid(num_points: int, length: float = 1.0) -> jax.Array:
  """Cell centres ``(i + ½) L / n`` of a periodic grid of ``num_points`` cells on [0, L)."""
  _check_count("num_points", num_points, 2)
  _check_positive("length", length)
  return (jnp.arange(num_points) + 0.5) * (length / num_points)


def advection_exact(x: jax.Array, t, position, amplitude=1.0, *, width: float = 0.05, velocity: float = 1.0):
  """Closed-form periodised pulse ``A exp(-(x - μ - c t)² / w²)`` on the unit interval (the nearest image).

  Args:
    x: grid points in [0, 1).
    t: time.
    position: initial centre μ.
    amplitude: pulse height A.
    width: w.
    velocity: c.

  Returns:
    ``u(x, t)``, the shape of ``x``.
  """
  _check_positive("width", width)
  d = x - position - velocity * t
  d = d - jnp.round(d)  # distance to the nearest periodic image of the centre
  return amplitude * jnp.exp(-((d / width) ** 2))


def solve_advection(u0: jax.Array, time, *, velocity: float = 1.0, length: float = 1.0) -> jax.Array:
  """Solves ``u_t + c u_x = 0`` on a periodic grid by the exact Fourier shift of the initial condition.

  Args:
    u0: ``(..., num_points)`` initial values at the cell centres.
    time: final time (may be traced).
    velocity: c.
    length: the period L.

  Returns:
    ``(..., num_points)`` the solution at ``time``.

  >>> x = periodic_grid(128)
  >>> u = solve_advection(advection_exact(x, 0.0, 0.3), 0.25)
  >>> print(float(jnp.max(jnp.abs(u - advection_exact(x, 0.25, 0.3)))) < 1e-5)
  True
  """
  u0 = jnp.asarray(u0)
  if u0.ndim < 1 or u0.shape[-1] < 2:
    raise ValueError(f"`u0` must have a last axis of >= 2 grid points, got shape {u0.shape}.")
  if not jnp.issubdtype(u0.dtype, jnp.floating):
    # The result is cast back to the dtype of `u0`: an integer one would be truncated.
    raise TypeError(f"`u0` must have a floating dtype, got {u0.dtype}.")
  _check_positive("length", length)
  n = u0.shape[-1]
  k = jnp.fft.rfftfreq(n, d=length / n)
  shift = jnp.exp(-2j * jnp.pi * k * velocity * time)
  return jnp.fft.irfft(jnp.fft.rfft(u0, axis=-1) * shift, n=n, axis=-1).astype(u0.dtype)


def advection_snapshots(
  key: jax.Array,
  num_samples: int,
  *,
  num_points: int = 256,
  width: float = 0.05,
  position_range: tuple[float, float] = (0.2, 0.8),
  amplitude_range: tuple[float, float] = (0.5, 2.0),
  time: float = 0.0,
  velocity: float = 1.0,
) -> PDESnapshots:
  """Pulses ``A exp(-(x - μ)² / w²)`` advected to ``time`` by :func:`solve_advection`; params columns ``(μ, A)``.

  >>> s = advection_snapshots(jax.random.key(0), 5, num_points=64)
  >>> print(s.snapshots.shape, s.params.shape)
  (5, 64) (5, 2)
  """
  _check_count("num_samples", num_samples, 1)
  lo_mu, hi_mu = position_range
  lo_a, hi_a = _check_range("amplitude_range", amplitude_range)
  x = periodic_grid(num_points)
  k_mu, k_a = jax.random.split(key)
  mu = jax.random.uniform(k_mu, (num_samples,), minval=lo_mu, maxval=hi_mu)
  amp = jax.random.uniform(k_a, (num_samples,), minval=lo_a, maxval=hi_a)
  u0 = advection_exact(x[None, :], 0.0, mu[:, None], amp[:, None], width=width)
  u = solve_advection(u0, time, velocity=velocity)
  return PDESnapshots(u, jnp.stack([mu, amp], axis=1), x)


# ----------------------------------------------------------------------------------------------------------------
# Viscous Burgers.


def burgers_cole_hopf(x: jax.Array, t, viscosity, a: float = 0.5) -> jax.Array:
  """Closed-form periodic Burgers solution ``2νa e^{-νt} sin x / (1 + a e^{-νt} cos x)`` on [0, 2π), |a| < 1."""
  if isinstance(a, (int, float)) and not abs(a) < 1:
    raise ValueError(f"`a` must satisfy |a| < 1, got {a!r}.")
  e = a * jnp.exp(-viscosity * t)
  return 2 * viscosity * e * jnp.sin(x) / (1 + e * jnp.cos(x))


def _minmod(a, b):
  return jnp.where(a * b > 0, jnp.sign(a) * jnp.minimum(jnp.abs(a), jnp.abs(b)), 0.0)


def _burgers_rhs(u, viscosity, dx):
  # MUSCL-minmod states at the interface i+½, Rusanov flux for u²/2, centred flux for ν u_x.
  du = jnp.roll(u, -1, -1) - u
  slope = _minmod(du, u - jnp.roll(u, 1, -1))
  left = u + 0.5 * slope
  right = jnp.roll(u - 0.5 * slope, -1, -1)
  speed = jnp.maximum(jnp.abs(left), jnp.abs(right))
  flux = 0.25 * (left**2 + right**2) - 0.5 * speed * (right - left) - viscosity * du / dx
  return -(flux - jnp.roll(flux, 1, -1)) / dx


def solve_burgers(u0: jax.Array, time, viscosity, *, num_steps: int, length: float = 2 * math.pi) -> jax.Array:
  """Solves ``u_t + (u²/2)_x = ν u_xx`` on a periodic grid (finite volumes, MUSCL-Rusanov, SSP-RK3).

  The scheme is conservative: the cell average of ``u`` is kept to rounding. Stable for
  ``Δt = time / num_steps <= 0.4 Δx / max|u|`` and ``Δt <= 0.4 Δx² / ν`` (the caller picks ``num_steps``;
  :func:`burgers_num_steps` gives a safe count).

  Args:
    u0: ``(..., num_points)`` initial cell averages.
    time: final time (may be traced).
    viscosity: ν >= 0, a scalar or an array broadcasting against ``u0[..., :1]``.
    num_steps: number of time steps (static).
    length: the period L.

  Returns:
    ``(..., num_points)`` the solution at ``time``.

  >>> x = periodic_grid(128, 2 * math.pi)
  >>> u = solve_burgers(burgers_cole_hopf(x, 0.0, 0.1), 1.0, 0.1, num_steps=200)
  >>> print(float(jnp.max(jnp.abs(u - burgers_cole_hopf(x, 1.0, 0.1)))) < 1e-4)
  True
  """
  _check_count("num_steps", num_steps, 1)
  u0 = jnp.asarray(u0)
  if u0.ndim < 1 or u0.shape[-1] < 3:
    raise ValueError(f"`u0` must have a last axis of >= 3 grid points, got shape {u0.shape}.")
  if isinstance(viscosity, (int, float)) and viscosity < 0:
    raise ValueError(f"`viscosity` must be >= 0, got {viscosity!r}.")
  dx = length / u0.shape[-1]
  dt = time / num_steps

  def step(u, _):
    u1 = u + dt * _burgers_rhs(u, viscosity, dx)
    u2 = 0.75 * u + 0.25 * (u1 + dt * _burgers_rhs(u1, viscosity, dx))
    return u / 3 + 2 / 3 * (u2 + dt * _burgers_rhs(u2, viscosity, dx)), None

  u, _ = jax.lax.scan(step, u0, None, length=num_steps)
  return u


def burgers_num_steps(time: float, num_points: int, *, max_speed: float, max_viscosity: float) -> int:
  """A step count meeting both stability bounds of :func:`solve_burgers` on [0, 2π)."""
  _check_nonnegative("time", time)
  _check_count("num_points", num_points, 3)
  _check_nonnegative("max_speed", max_speed)
  _check_nonnegative("max_viscosity", max_viscosity)
  dx = 2 * math.pi / num_points
  dt = min(0.4 * dx / max(max_speed, 1e-12), 0.4 * dx**2 / max(max_viscosity, 1e-12))
  return max(1, math.ceil(time / dt))


def burgers_snapshots(
  key: jax.Array,
  num_samples: int,
  *,
  num_points: int = 256,
  time: float = 1.0,
  amplitude_range: tuple[float, float] = (0.5, 2.0),
  viscosity_range: tuple[float, float] = (1e-3, 1e-2),
  scale_range: tuple[float, float] = (0.5, 2.0),
) -> PDESnapshots:
  """Burgers solutions from ``u0 = A sin x`` at ``time``, reported times a random sign and scale.

  Parameters: A ~ U(amplitude_range), log ν ~ U(log viscosity_range), the reported scale
  ``s = ±U(scale_range)`` with a fair sign. Rows are ``s · u(x, time; A, ν)``; params columns ``(A, ν, s)``.

  >>> s = burgers_snapshots(jax.random.key(0), 3, num_points=64, time=0.5)
  >>> print(s.snapshots.shape, s.params.shape)
  (3, 64) (3, 3)
  """
  _check_count("num_samples", num_samples, 1)
  _check_count("num_points", num_points, 8)
  lo_a, hi_a = _check_range("amplitude_range", amplitude_range)
  lo_nu, hi_nu = _check_range("viscosity_range", viscosity_range)
  lo_s, hi_s = _check_range("scale_range", scale_range)
  _check_positive("time", time)
  k_a, k_nu, k_s, k_sign = jax.random.split(key, 4)
  amp = jax.random.uniform(k_a, (num_samples,), minval=lo_a, maxval=hi_a)
  nu = jnp.exp(jax.random.uniform(k_nu, (num_samples,), minval=math.log(lo_nu), maxval=math.log(hi_nu)))
  sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_samples,)), 1.0, -1.0)
  scale = sign * jax.random.uniform(k_s, (num_samples,), minval=lo_s, maxval=hi_s)
  x = periodic_grid(num_points, 2 * math.pi)
  num_steps = burgers_num_steps(time, num_points, max_speed=hi_a, max_viscosity=hi_nu)
  u = solve_burgers(amp[:, None] * jnp.sin(x)[None, :], time, nu[:, None], num_steps=num_steps)
  return PDESnapshots(scale[:, None] * u, jnp.stack([amp, nu, scale], axis=1), x)
