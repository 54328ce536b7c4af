r"""Tumour growth by the Fisher–Kolmogorov equation: the discretisation, a forward simulator and synthetic patients.

The model of GliODIL (Balcerak, Weidner, Karnakov, Ezhov, Litvinov, Koumoutsakos, Zhang, Lowengrub, Wiestler,
Menze. "Individualizing Glioma Radiotherapy Planning by Optimization of Data and Physics-Informed Discrete Loss",
Nature Communications 2025, arXiv 2312.05063, Methods "Tumour growth model"):

  u_t = ∇·(D(x) ∇u) + ρ u (1 - u),   no flux through the boundary and into the CSF,

with the tissue-dependent diffusion ``D = D_w (m_WM + m_GM / r)``, ``r = D_w / D_g`` (white matter diffuses
``r`` times faster than grey matter). As in the authors' code, the tissue fractions are averaged onto the cell
faces and a face whose ``m_WM + m_GM < 0.1`` carries no flux (the CSF is a barrier). The conservative flux form
``[D₊(u_{i+1} - u_i) - D₋(u_i - u_{i-1})] / h²`` conserves ``Σ u`` exactly when ρ = 0. (The authors' code takes
the z-faces' minus-side diffusion from the y-face fractions; here every axis uses its own faces.)

Time stepping is Crank–Nicolson (the scheme whose residual ODIL minimises, ``toolkit.pde.odil``):

  (u^n - u^{n-1}) / Δt = ½ [L u^n + L u^{n-1}] + ½ ρ [|u^n|(1 - u^n) + |u^{n-1}|(1 - u^{n-1})],

solved for u^n by Newton's method with matrix-free conjugate gradients (the Jacobian
``I/Δt - ½L - ½ρ diag(f'(u))`` is symmetric positive definite for ``ρΔt < 2``). The ``|u|`` is the authors'.

This module also holds what the method is measured against, apart from the method: a synthetic brain-like domain
(white matter, a folded grey-matter cortex, CSF ventricles and a CSF rim), synthetic patients (a forward run on a
twice finer grid, block-averaged to the working grid, so that an inverse solver on the working grid does not
"commit the inverse crime"), the segmentation at two thresholds and the PET-like signal, the Dice score and the
uniform-margin control of radiotherapy planning, and the closed forms used to check the discretisation (heat
kernel, logistic ODE).

Units are the caller's: lengths in the units of ``spacing`` (mm), times in those of ``duration`` (days).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

# A face whose white + grey matter fraction is below this carries no flux (the authors' threshold).
TISSUE_THRESHOLD = 0.1

# Segmentation labels.
BACKGROUND, EDEMA, CORE = 0, 1, 2


class TissueMaps(NamedTuple):
  """TissueMaps fractions on the grid, each of the spatial shape; they sum to 1 in every cell.

  Attributes:
    white: white-matter fraction m_WM.
    grey: grey-matter fraction m_GM.
    csf: cerebrospinal fluid (and outside the brain), ``1 - white - grey``.
  """

  white: jax.Array
  grey: jax.Array
  csf: jax.Array


class SyntheticPatient(NamedTuple):
  """A synthetic patient: the tissue, the true tumour and what a scan shows of it at the final time.

  Attributes:
    tissue: :class:`TissueMaps` on the working grid.
    field: ``(num_steps + 1, *shape)`` the true tumour-cell density on the working grid (block averages of the
      finer simulation), at the working grid's times.
    labels: ``shape`` int segmentation at the final time: ``CORE`` (2) where u ≥ θ_up, ``EDEMA`` (1) where
      θ_down ≤ u < θ_up, ``BACKGROUND`` (0) elsewhere.
    pet: ``shape`` PET-like signal at the final time: u on the visible lesion (labels > 0), 0 elsewhere.
    d_white: true white-matter diffusion D_w.
    ratio: true r = D_w / D_g.
    rho: true proliferation rate ρ.
    centre: ``(ndim,)`` true seed centre (length units).
    theta_down: lower segmentation threshold (edema).
    theta_up: upper segmentation threshold (core).
  """

  tissue: TissueMaps
  field: jax.Array
  labels: jax.Array
  pet: jax.Array
  d_white: float
  ratio: float
  rho: float
  centre: np.ndarray
  theta_down: float
  theta_up: float


# ----------------------------------------------------------------------------------------------------------------
# Input checks.


def check_spatial(x: Any, name: str, *, min_ndim: int = 1, max_ndim: int = 3) -> jax.Array:
  """``x`` as a floating array of ``min_ndim`` to ``max_ndim`` spatial axes, at least 2 cells along each; a
  ``TypeError``/``ValueError`` naming ``name`` otherwise."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
  if not min_ndim <= x.ndim <= max_ndim:
    raise ValueError(f"`{name}` must have {min_ndim} to {max_ndim} dimensions, got shape {x.shape}.")
  if min(x.shape) < 2:
    raise ValueError(f"`{name}` needs at least 2 cells along every axis, got shape {x.shape}.")
  return x


def check_positive(value: Any, name: str) -> None:
  """A positive scalar (checked when concrete; a traced value must be a scalar)."""
  if isinstance(value, jax.core.Tracer):
    if jnp.ndim(value) != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    return
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"`{name}` must be a positive number, got {value!r}.") from None
  if not (v > 0 and math.isfinite(v)):
    raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")


def check_count(value: Any, name: str, minimum: int = 1) -> None:
  """Refuses anything but a Python int of at least ``minimum``, naming ``name``."""
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"`{name}` must be a Python int >= {minimum}, got {value!r}.")


def _check_rate(value: Any, name: str) -> None:
  """A rate ≥ 0 (a concrete value must be numeric, free of NaN and non-negative; a traced one is not read)."""
  if isinstance(value, jax.core.Tracer):
    return
  try:
    v = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(f"`{name}` must be a number >= 0, got {value!r}.") from None
  if not (v >= 0).all():
    raise ValueError(f"`{name}` must be >= 0, got {value!r}.")


def _check_tissue(tissue: Any) -> int:
  if not isinstance(tissue, TissueMaps):
    raise TypeError(f"`tissue` must be a TissueMaps, got {type(tissue).__name__}.")
  white = check_spatial(tissue.white, "tissue.white")
  if jnp.shape(tissue.grey) != white.shape:
    raise ValueError(f"tissue.grey must have the shape of tissue.white {white.shape}, got {jnp.shape(tissue.grey)}.")
  return white.ndim


# ----------------------------------------------------------------------------------------------------------------
# The discretisation.


def _face_mean(m: jax.Array, axis: int) -> jax.Array:
  n = m.shape[axis]
  lo = jax.lax.slice_in_dim(m, 0, n - 1, axis=axis)
  hi = jax.lax.slice_in_dim(m, 1, n, axis=axis)
  return 0.5 * (lo + hi)


def diffusion_faces(tissue: TissueMaps, d_white: Any, ratio: Any) -> tuple[jax.Array, ...]:
  """Diffusion coefficients on the interior cell faces, ``D_w (m̃_WM + m̃_GM / r)``, one array per axis.

  The face fractions m̃ are the means of the two cells; a face with ``m̃_WM + m̃_GM < 0.1`` gets 0.

  Args:
    tissue: :class:`TissueMaps` of spatial shape ``(n_1, ..., n_d)``.
    d_white: white-matter diffusion D_w (length² / time), a scalar.
    ratio: r = D_w / D_g ≥ 1, a scalar.

  Returns:
    A tuple of d arrays; the a-th has the spatial shape with ``n_a - 1`` along axis a.
  """
  ndim = _check_tissue(tissue)
  check_positive(d_white, "d_white")
  check_positive(ratio, "ratio")
  faces = []
  for axis in range(ndim):
    wm, gm = _face_mean(tissue.white, axis), _face_mean(tissue.grey, axis)
    keep = (wm + gm) >= TISSUE_THRESHOLD
    faces.append(jnp.where(keep, d_white * (wm + gm / ratio), 0.0))
  return tuple(faces)


def divergence(u: jax.Array, faces: tuple[jax.Array, ...], spacing: Any) -> jax.Array:
  """``∇·(D∇u)`` in conservative flux form with no flux through the domain boundary.

  Args:
    u: ``(..., n_1, ..., n_d)``: the last d axes are space (any leading axes, e.g. time, are batch).
    faces: d face-coefficient arrays from :func:`diffusion_faces`.
    spacing: grid spacing h (the same along every axis).

  Returns:
    ``∇·(D∇u)`` of the shape of u; its sum over space is 0 (up to rounding) for any u.
  """
  if not isinstance(faces, tuple | list) or not 1 <= len(faces) <= jnp.ndim(u):
    raise ValueError(
      f"`faces` must be a tuple of 1 to {jnp.ndim(u)} arrays (one per spatial axis of u, from diffusion_faces), "
      f"got {type(faces).__name__} of length {len(faces) if isinstance(faces, tuple | list) else None}."
    )
  check_positive(spacing, "spacing")
  ndim = len(faces)
  out = jnp.zeros_like(u)
  for a, face in enumerate(faces):
    axis = u.ndim - ndim + a
    flux = face * jnp.diff(u, axis=axis)  # D₊(u_{i+1} - u_i) on the interior faces
    pad = [(0, 0)] * u.ndim
    pad[axis] = (1, 1)  # zero flux through the two boundary faces
    out = out + jnp.diff(jnp.pad(flux, pad), axis=axis)
  return out / spacing**2


def reaction(u: jax.Array, rho: Any) -> jax.Array:
  """The proliferation term ρ|u|(1 - u) (the ``|u|`` as in the authors' code keeps u ≥ 0 stable)."""
  _check_rate(rho, "rho")
  return rho * jnp.abs(u) * (1.0 - u)


def gaussian_seed(shape: tuple[int, ...], centre: Any, spacing: Any, *, amplitude: Any = 0.8, width: Any = 4.0):
  """The initial tumour: ``min(1, a exp(-|x - c|² / (2 w²)))``, set to 0 where it is below 0.1.

  GliODIL's initial condition (a Gaussian of learnable centre, cut at 0.1 and clipped at 1; the authors write it as
  the heat kernel ``M (4πDt)^{-d/2} exp(-r²/(4Dt))``, i.e. ``a = M (4πDt)^{-d/2}`` and ``w² = 2Dt``).

  Args:
    shape: the spatial grid shape.
    centre: ``(d,)`` the centre c in length units; cell i has its centre at ``(i + ½) h``.
    spacing: grid spacing h.
    amplitude: peak a.
    width: standard deviation w (length units).

  Returns:
    Array of ``shape``.

  >>> import jax.numpy as jnp
  >>> u0 = gaussian_seed((8, 8), jnp.array([8.0, 8.0]), 2.0, amplitude=0.8, width=3.0)
  >>> print(float(u0.max()) < 0.8, int((u0 > 0).sum()))
  True 32
  """
  centre = jnp.asarray(centre)
  if centre.shape != (len(shape),):
    raise ValueError(f"`centre` must have shape ({len(shape)},) for a {len(shape)}-D grid, got {centre.shape}.")
  check_positive(spacing, "spacing")
  check_positive(width, "width")
  coords = jnp.meshgrid(*[(jnp.arange(n) + 0.5) * spacing for n in shape], indexing="ij")
  r2 = sum((x - c) ** 2 for x, c in zip(coords, centre))
  g = jnp.minimum(1.0, amplitude * jnp.exp(-r2 / (2 * width**2)))
  return jnp.where(g >= 0.1, g, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The forward simulator.


def crank_nicolson_step(
  u_prev: jax.Array,
  faces: tuple[jax.Array, ...],
  rho: Any,
  dt: Any,
  spacing: Any,
  *,
  num_newton: int = 4,
  num_cg_iterations: int = 200,
  cg_tol: float = 1e-6,
) -> jax.Array:
  """One Crank–Nicolson step of the Fisher–Kolmogorov equation, by Newton's method with matrix-free CG.

  Solves ``(u - u_prev)/Δt - ½[L u + L u_prev] - ½[f(u) + f(u_prev)] = 0`` for u, ``f = ρ|u|(1 - u)``.
  """
  check_positive(dt, "dt")
  check_count(num_newton, "num_newton")
  rhs_prev = u_prev / dt + 0.5 * divergence(u_prev, faces, spacing) + 0.5 * reaction(u_prev, rho)

  def g(u):
    return u / dt - 0.5 * divergence(u, faces, spacing) - 0.5 * reaction(u, rho) - rhs_prev

  def newton(u, _):
    dfdu = rho * (jnp.sign(u) * (1.0 - u) - jnp.abs(u))

    def matvec(v):
      return v / dt - 0.5 * divergence(v, faces, spacing) - 0.5 * dfdu * v

    delta, _ = cg(matvec, -g(u), tol=cg_tol, atol=0.0, maxiter=num_cg_iterations)
    return u + delta, None

  # Explicit Euler predictor, then Newton.
  u0 = u_prev + dt * (divergence(u_prev, faces, spacing) + reaction(u_prev, rho))
  u, _ = jax.lax.scan(newton, u0, None, length=num_newton)
  return u


def simulate(
  u0: jax.Array,
  faces: tuple[jax.Array, ...],
  rho: Any,
  *,
  duration: Any,
  num_steps: int,
  spacing: Any,
  num_newton: int = 4,
  num_cg_iterations: int = 200,
  cg_tol: float = 1e-6,
) -> jax.Array:
  """Crank–Nicolson run of u_t = ∇·(D∇u) + ρ|u|(1 - u) from u0 over ``duration`` in ``num_steps`` equal steps.

  Args:
    u0: ``(n_1, ..., n_d)`` initial density.
    faces: the face diffusion coefficients (:func:`diffusion_faces`).
    rho: proliferation rate ρ ≥ 0.
    duration: final time T.
    num_steps: number of time steps (Δt = T / num_steps).
    spacing: grid spacing h.
    num_newton: Newton iterations per step (quadratic convergence: 4 reach rounding from the Euler predictor).
    num_cg_iterations: the most CG iterations per Newton step.
    cg_tol: CG's relative tolerance (1e-6 suits float32; use ~1e-12 in float64).

  Returns:
    ``(num_steps + 1, n_1, ..., n_d)`` the densities at times ``0, Δt, ..., T``.

  >>> import jax.numpy as jnp
  >>> tissue = TissueMaps(jnp.ones((16,)), jnp.zeros((16,)), jnp.zeros((16,)))
  >>> faces = diffusion_faces(tissue, 1.0, 10.0)
  >>> u = simulate(jnp.zeros(16).at[8].set(1.0), faces, 0.0, duration=2.0, num_steps=8, spacing=1.0)
  >>> print(u.shape, round(float(u[-1].sum()), 4))  # ρ = 0: mass conserved
  (9, 16) 1.0
  """
  u0 = check_spatial(u0, "u0")
  if len(faces) != u0.ndim:
    raise ValueError(f"`faces` must hold {u0.ndim} arrays (one per axis of u0), got {len(faces)}.")
  check_count(num_steps, "num_steps")
  check_count(num_newton, "num_newton")
  check_positive(duration, "duration")
  check_positive(spacing, "spacing")
  dt = duration / num_steps

  def step(u, _):
    u = crank_nicolson_step(
      u, faces, rho, dt, spacing, num_newton=num_newton, num_cg_iterations=num_cg_iterations, cg_tol=cg_tol
    )
    return u, u

  _, us = jax.lax.scan(step, u0, None, length=num_steps)
  return jnp.concatenate([u0[None], us], axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic brain-like domain and patients.


def synthetic_brain(
  shape: tuple[int, ...], spacing: float, *, key: jax.Array | None = None, supersample: int = 4
) -> TissueMaps:
  """A brain-like slab of tissue: white matter, a folded grey-matter cortex, CSF ventricles and a CSF rim.

  Geometry (in coordinates scaled to the box [0, 1]^d): the brain is an ellipsoid; its outer band is grey matter
  whose inner boundary is folded (gyri, a sinusoidal modulation); two ellipsoidal ventricles (CSF) sit near the
  centre, and a deep grey-matter nucleus beside them; outside the brain is CSF. A ``key`` perturbs the positions,
  radii and folding phases. Fractions are the area (volume) fractions of each class over ``supersample^d``
  sub-samples per cell, so a grid twice as fine block-averages to this one when ``supersample`` is even.

  Args:
    shape: the grid shape (2-D or 3-D).
    spacing: grid spacing (unused by the geometry, which scales with the box; kept for symmetry with the rest).
    key: optional PRNG key for the perturbation; ``None`` gives the reference brain.
    supersample: sub-samples per cell and axis.

  Returns:
    :class:`TissueMaps` of ``shape``.
  """
  del spacing
  shape = tuple(int(n) for n in shape)
  if len(shape) not in (2, 3) or min(shape) < 4:
    raise ValueError(f"`shape` must be a 2-D or 3-D grid with >= 4 cells per axis, got {shape}.")
  check_count(supersample, "supersample")
  ndim = len(shape)
  rng = np.random.default_rng(0 if key is None else np.asarray(jax.random.randint(key, (), 0, 2**31 - 1)).item())
  jitter = (lambda s: rng.uniform(-s, s)) if key is not None else (lambda s: 0.0)

  axes = [(np.arange(n * supersample) + 0.5) / (n * supersample) for n in shape]
  x = np.meshgrid(*axes, indexing="ij")
  centre = np.array([0.5 + jitter(0.02) for _ in range(ndim)])
  radii = np.array([0.47 + jitter(0.02)] + [0.44 + jitter(0.02)] * (ndim - 1))
  rel = [(xi - c) / r for xi, c, r in zip(x, centre, radii)]
  rad = np.sqrt(sum(r**2 for r in rel))
  angle = np.arctan2(rel[1], rel[0])
  phase = jitter(np.pi)
  fold = 0.06 * np.sin(9 * angle + phase) + 0.03 * np.sin(5 * angle - 2 * phase)
  if ndim == 3:
    fold = fold * np.cos(3 * np.pi * rel[2])
  brain = rad <= 1.0
  white = brain & (rad <= 0.8 + fold)

  def ellipsoid(c, r):
    return sum(((xi - ci) / ri) ** 2 for xi, ci, ri in zip(x, c, r)) <= 1.0

  dy = jitter(0.02)
  vent_r = [0.05, 0.13] + [0.08] * (ndim - 2)
  vent_l = ellipsoid([0.42 + jitter(0.02), 0.45 + dy] + [0.5] * (ndim - 2), vent_r)
  vent_r_ = ellipsoid([0.58 + jitter(0.02), 0.45 + dy] + [0.5] * (ndim - 2), vent_r)
  nucleus = ellipsoid([0.5, 0.66 + jitter(0.02)] + [0.5] * (ndim - 2), [0.08, 0.05] + [0.06] * (ndim - 2))
  csf = ~brain | vent_l | vent_r_
  white = white & ~csf & ~nucleus
  grey = brain & ~csf & ~white

  def frac(mask):
    m = mask.astype(np.float64).reshape(sum(((n, supersample) for n in shape), ()))
    return m.mean(axis=tuple(range(1, 2 * ndim, 2)))

  w, g = frac(white), frac(grey)
  dtype = jnp.result_type(float)  # float32, or float64 under x64
  return TissueMaps(jnp.asarray(w, dtype), jnp.asarray(g, dtype), jnp.asarray(1.0 - w - g, dtype))


def block_average(x: jax.Array, factor: int, *, num_leading: int = 0) -> jax.Array:
  """Means over ``factor^d`` blocks of the trailing axes (restriction of a finer grid onto a coarser one)."""
  x = jnp.asarray(x)
  lead, space = x.shape[:num_leading], x.shape[num_leading:]
  if any(n % factor for n in space):
    raise ValueError(f"the spatial shape {space} must be divisible by `factor` {factor}.")
  split = sum(((n // factor, factor) for n in space), ())
  y = x.reshape(lead + split)
  return y.mean(axis=tuple(num_leading + 1 + 2 * i for i in range(len(space))))


def segment(u: jax.Array, theta_down: Any, theta_up: Any) -> jax.Array:
  """Segmentation labels: CORE (2) where u ≥ θ_up, EDEMA (1) where θ_down ≤ u < θ_up, BACKGROUND (0) elsewhere."""
  concrete = not any(isinstance(t, jax.core.Tracer) for t in (theta_down, theta_up))
  if concrete and not float(theta_down) <= float(theta_up):
    raise ValueError(f"`theta_down` ({theta_down}) must not exceed `theta_up` ({theta_up}): no edema band is left.")
  return jnp.where(u >= theta_up, CORE, jnp.where(u >= theta_down, EDEMA, BACKGROUND)).astype(jnp.int32)


def pet_signal(u: jax.Array, labels: jax.Array) -> jax.Array:
  """The PET-like signal of the authors' synthetic data: u on the visible lesion (labels > 0), 0 elsewhere."""
  u_shape, labels_shape = jnp.shape(u), jnp.shape(labels)
  if len(labels_shape) > len(u_shape) or u_shape[len(u_shape) - len(labels_shape) :] != labels_shape:
    raise ValueError(f"`labels` must have the spatial shape of `u` {u_shape}, got shape {labels_shape}.")
  return jnp.where(labels > 0, u, 0.0)


def synthetic_patient(
  key: jax.Array,
  shape: tuple[int, ...] = (48, 48),
  *,
  spacing: float = 2.0,
  duration: float = 100.0,
  num_steps: int = 32,
  refine: int = 2,
  time_refine: int = 4,
  d_white: float | None = None,
  rho: float | None = None,
  ratio: float | None = None,
  seed_amplitude: float = 0.8,
  seed_width: float = 4.0,
) -> SyntheticPatient:
  """A synthetic patient: a random brain, tumour parameters, seed and thresholds; the truth simulated finer.

  The parameter ranges are ours, chosen so the final tumour spans a fair part of the 48² grid (2 mm voxels,
  100 days): ``D_w ~ U(0.5, 1.2)`` mm²/day, ``ρ ~ U(0.04, 0.08)``/day, ``r ~ U(10, 30)`` (the authors' range);
  the thresholds as the authors' generator: ``θ_up ~ U(0.45, 0.60)``, ``θ_down ~ U(0.15, 0.35)``. The seed
  centre is drawn in white matter at least 12 mm from the CSF. The forward run uses a grid ``refine`` times finer
  in space and ``time_refine`` times in time, then block-averages onto ``shape`` (times ``0, Δt, ..., T`` of the
  working grid). The seed is the working grid's :func:`gaussian_seed`, constant on each coarse cell.

  Args:
    key: PRNG key.
    shape: the working grid (2-D or 3-D).
    spacing: its spacing h (mm).
    duration: T (days) between the seed and the scan.
    num_steps: time steps of the working grid.
    refine: spatial refinement of the forward run (1: the working grid itself).
    time_refine: temporal refinement of the forward run.
    d_white, rho, ratio: fixed values instead of random draws.
    seed_amplitude, seed_width: the initial Gaussian (:func:`gaussian_seed`).

  Returns:
    A :class:`SyntheticPatient`.
  """
  check_count(refine, "refine")
  check_count(time_refine, "time_refine")
  check_count(num_steps, "num_steps")
  # Checked here: `simulate` runs under jit below, where `duration` is traced and could not be read.
  check_positive(spacing, "spacing")
  check_positive(duration, "duration")
  k_brain, k_par, k_centre = jax.random.split(key, 3)
  u = np.asarray(jax.random.uniform(k_par, (5,)))
  d_white = float(0.5 + 0.7 * u[0]) if d_white is None else float(d_white)
  rho = float(0.04 + 0.04 * u[1]) if rho is None else float(rho)
  ratio = float(10 + 20 * u[2]) if ratio is None else float(ratio)
  theta_up, theta_down = float(0.45 + 0.15 * u[3]), float(0.15 + 0.2 * u[4])

  fine_shape = tuple(n * refine for n in shape)
  fine = synthetic_brain(fine_shape, spacing / refine, key=k_brain, supersample=max(2, 4 // refine))
  tissue = TissueMaps(*(block_average(m, refine) for m in fine))

  # TumourSeed in white matter, away from the CSF (distance on the working grid).
  from scipy import ndimage

  far = ndimage.distance_transform_edt(np.asarray(tissue.csf) < 0.5) * spacing >= 12.0
  candidates = np.argwhere(far & (np.asarray(tissue.white) > 0.9))
  if len(candidates) == 0:
    raise ValueError(f"no white-matter cell 12 mm from the CSF on the grid {shape}; use a larger grid.")
  pick = candidates[int(jax.random.randint(k_centre, (), 0, len(candidates)))]
  centre = (pick + 0.5) * spacing

  faces = diffusion_faces(fine, d_white, ratio)
  # The seed is defined on the working grid (piecewise constant on the fine one), so the truth's initial condition
  # block-averages back to exactly the seed an inverse solver on the working grid models.
  u0 = gaussian_seed(shape, centre, spacing, amplitude=seed_amplitude, width=seed_width)
  for axis in range(len(shape)):
    u0 = jnp.repeat(u0, refine, axis=axis)
  run = jax.jit(simulate, static_argnames=("num_steps",))
  field = run(u0, faces, rho, duration=duration, num_steps=num_steps * time_refine, spacing=spacing / refine)
  field = block_average(field[::time_refine], refine, num_leading=1)
  labels = segment(field[-1], theta_down, theta_up)
  return SyntheticPatient(
    tissue, field, labels, pet_signal(field[-1], labels), d_white, ratio, rho, centre, theta_down, theta_up
  )


# ----------------------------------------------------------------------------------------------------------------
# Metrics and the uniform-margin control.


def dice(a: Any, b: Any) -> float:
  """Dice score 2|A∩B| / (|A| + |B|) of two boolean masks (1 when both are empty)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if a.shape != b.shape:
    raise ValueError(f"`a` and `b` must be masks of one shape, got {a.shape} and {b.shape}.")
  total = a.sum() + b.sum()
  return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def uniform_margin(lesion: Any, num_cells: int, *, spacing: float = 1.0, mask: Any = None) -> np.ndarray:
  """The standard clinical target: the visible lesion grown by a uniform (Euclidean) margin to ``num_cells`` cells.

  Cells are added in order of their distance to the lesion (ties broken by index), inside ``mask`` (the brain)
  when given, until the region has ``num_cells`` cells, so it matches another target's volume exactly.
  """
  lesion = np.asarray(lesion, bool)
  if isinstance(num_cells, bool) or not isinstance(num_cells, int | np.integer) or num_cells < 0:
    raise ValueError(f"`num_cells` must be an int >= 0, got {num_cells!r}.")
  if mask is not None and np.shape(mask) != lesion.shape:
    raise ValueError(f"`mask` must have the lesion's shape {lesion.shape}, got {np.shape(mask)}.")
  from scipy import ndimage

  distance = ndimage.distance_transform_edt(~lesion, sampling=spacing)
  allowed = np.ones_like(lesion) if mask is None else np.asarray(mask, bool)
  distance = np.where(lesion, -1.0, np.where(allowed, distance, np.inf)).ravel()
  order = np.argsort(distance, kind="stable")
  num_cells = max(int(num_cells), int(lesion.sum()))
  region = np.zeros(lesion.size, bool)
  region[order[:num_cells]] = True
  return region.reshape(lesion.shape) & np.isfinite(distance.reshape(lesion.shape))


def heat_kernel(x: Any, t: Any, *, diffusion: float, variance0: float, mass: float = 1.0) -> Any:
  """Closed form of u_t = D u_xx on the line from a Gaussian of variance σ₀²: a Gaussian of variance σ₀² + 2Dt."""
  check_positive(variance0, "variance0")
  _check_rate(diffusion, "diffusion")
  var = variance0 + 2.0 * diffusion * t
  return mass * np.exp(-(np.asarray(x) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)


def logistic(u0: Any, t: Any, rho: float) -> Any:
  """Closed form of u' = ρu(1 - u): ``u0 e^{ρt} / (1 - u0 + u0 e^{ρt})``."""
  # A negative density has no logistic solution: it blows up where the denominator crosses 0.
  _check_rate(u0, "u0")
  e = np.exp(rho * np.asarray(t))
  return u0 * e / (1.0 - u0 + u0 * e)
