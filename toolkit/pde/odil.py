r"""ODIL for glioma growth (GliODIL): the discrete data- and physics-informed loss over the whole space-time field.

Balcerak, Weidner, Karnakov, Ezhov, Litvinov, Koumoutsakos, Zhang, Lowengrub, Wiestler, Menze. "Individualizing
Glioma Radiotherapy Planning by Optimization of Data and Physics-Informed Discrete Loss", Nature Communications
2025, arXiv 2312.05063; built on ODIL (Optimizing a DIscrete Loss), Karnakov, Litvinov, Koumoutsakos, "Solving
inverse problems in physics by optimizing a discrete loss: fast and accurate learning without neural networks",
PNAS Nexus 2024, arXiv 2205.04611.

ODIL does not integrate the PDE: the discrete tumour density on every cell at every time step, ``u[n, i, j(, k)]``,
and the model's parameters are all unknowns of one least-squares problem, whose loss is the sum of the weighted
mean squares of the residual terms (GliODIL, Methods "Loss function"; the authors' code):

- ``pde`` (default weight 2400): Crank–Nicolson, (u^n - u^{n-1})/Δt - ½[L u^n + L u^{n-1}] - ½[f(u^n) + f(u^{n-1})],
  with L u = ∇·(D∇u) in conservative flux form, f(u) = ρ|u|(1 - u), n = 1..N;
- ``initial`` (1000): u^0 - seed(x; x₀), a Gaussian of learnable centre x₀ (cut at 0.1, clipped at 1);
- ``segmentation`` (12, or 4 with PET): one-sided hinges at the final time: core needs u ≥ θ_up, edema
  θ_down ≤ u ≤ θ_up, background u ≤ θ_down; the thresholds θ_down, θ_up are learned;
- ``pet`` (45): (u - s·PET) where PET > 0.1, with a learned scale s (optional);
- ``range`` (1): u outside [0, 1];
- ``csf`` (0.01): u where white + grey matter < 0.1;
- ``bounds`` (1): hinges keeping D_w, ρ, r, θ_down, θ_up, s in their ranges.

The discretisation (tissue-dependent diffusion ``D = D_w (m_WM + m_GM / r)`` on the faces, no flux into the CSF)
is :mod:`toolkit.pde.tumour_growth`'s, shared with the forward simulator.

The unknown field may be written as a sum of multigrid levels, ``u = Σ_l upsample(v_l)`` with ``v_l`` on a grid
coarsened 2^l times in space and time (ODIL's multigrid decomposition, GliODIL uses 4 levels): the minimiser is
the same, the first-order optimisers converge much faster. Optimisers are optax ``GradientTransformation``s (Adam;
L-BFGS via ``optax.lbfgs``, the authors' ODIL also offers it), driven by :func:`init` and :func:`step`, or the
whole run :func:`fit`. :func:`gauss_newton` is ODIL's Newton method without the multigrid linear solver: Gauss–
Newton (Levenberg–Marquardt damped) on the stacked residuals, with matrix-free conjugate gradients on
``(JᵀJ + λI) δ = -Jᵀr`` through ``jax.jvp``/``jax.vjp``.

Our choices (stated because they differ from the authors' code): D_w, ρ and r are optimised through their
logarithms (the authors use absolute values), the threshold bounds are widened to θ_down ∈ [0.1, 0.5] and
θ_up ∈ [0.4, 0.9] (theirs: [0.2, 0.5] and [0.5, 0.85], narrower than their own generator's θ_down ~ U(0.15, 0.35)),
the PET residual has no background offset, and the ranges of D_w and ρ are arguments (their units are the
caller's).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse.linalg import cg

from toolkit.pde import tumour_growth as tg

# ----------------------------------------------------------------------------------------------------------------
# Types.


class GliodilParams(NamedTuple):
  """The model's unknown scalars, in the coordinates the optimiser sees.

  Attributes:
    log_d_white: log of the white-matter diffusion D_w (length² / time).
    log_rho: log of the proliferation rate ρ (1 / time).
    log10_ratio: log10 of r = D_w / D_g.
    centre: ``(d,)`` centre of the initial Gaussian (length units).
    theta_down: segmentation threshold of the edema (the visible lesion's edge).
    theta_up: segmentation threshold of the core.
    pet_scale: s, the PET signal's scale (PET ≈ u / s).
  """

  log_d_white: jax.Array
  log_rho: jax.Array
  log10_ratio: jax.Array
  centre: jax.Array
  theta_down: jax.Array
  theta_up: jax.Array
  pet_scale: jax.Array

  @property
  def d_white(self) -> jax.Array:
    return jnp.exp(self.log_d_white)

  @property
  def rho(self) -> jax.Array:
    return jnp.exp(self.log_rho)

  @property
  def ratio(self) -> jax.Array:
    return 10.0**self.log10_ratio


def make_params(
  d_white: float, rho: float, ratio: float, centre: Any, *, theta_down=0.25, theta_up=0.6, pet_scale=1.0
) -> GliodilParams:
  """:class:`GliodilParams` from values in natural units (float32 scalars unless x64 is on)."""
  for name, value in (("d_white", d_white), ("rho", rho), ("ratio", ratio)):
    tg.check_positive(value, name)
  if np.ndim(centre) != 1 or not 1 <= np.shape(centre)[0] <= 3:
    raise ValueError(f"`centre` must have shape (d,) with d in 1..3 spatial axes, got {np.shape(centre)}.")
  f = jnp.asarray
  return GliodilParams(
    f(math.log(d_white), float),
    f(math.log(rho), float),
    f(math.log10(ratio), float),
    jnp.asarray(centre, float),
    f(theta_down, float),
    f(theta_up, float),
    f(pet_scale, float),
  )


class OdilUnknowns(NamedTuple):
  """Everything ODIL optimises: the field (as multigrid levels, finest first) and the parameters.

  Attributes:
    levels: tuple of arrays; level l has the shape ``⌈(N + 1) / 2^l⌉ × ⌈n_a / 2^l⌉ ...`` and is upsampled
      (multilinear) to ``(N + 1, n_1, ..., n_d)``; the field is their sum. One level is the plain field.
    params: :class:`GliodilParams`.
  """

  levels: tuple[jax.Array, ...]
  params: GliodilParams


class TumourScan(NamedTuple):
  """What is known of a patient: the tissue and one scan at the final time.

  Attributes:
    tissue: :class:`toolkit.pde.tumour_growth.TissueMaps`, spatial shape ``(n_1, ..., n_d)``.
    labels: int segmentation at the final time (0 background, 1 edema, 2 core).
    pet: PET-like signal at the final time (``None``: no PET term).
    duration: time T from the seed to the scan.
    spacing: grid spacing h.
  """

  tissue: tg.TissueMaps
  labels: jax.Array
  pet: jax.Array | None
  duration: Any
  spacing: Any


class OdilWeights(NamedTuple):
  """OdilWeights of the loss terms (defaults: the authors' ``operator_fd``; ``segmentation`` 12 without PET, 4 with)."""

  pde: float = 2400.0
  initial: float = 1000.0
  segmentation: float = 4.0
  pet: float = 45.0
  range: float = 1.0
  csf: float = 0.01
  bounds: float = 1.0


class OdilBounds(NamedTuple):
  """Ranges kept by the hinge penalties (``bounds`` term); D_w and ρ in the caller's units."""

  d_white: tuple[float, float] = (0.01, 10.0)
  rho: tuple[float, float] = (0.02, 1.0)
  ratio: tuple[float, float] = (10.0, 1000.0)
  theta_down: tuple[float, float] = (0.1, 0.5)
  theta_up: tuple[float, float] = (0.4, 0.9)
  pet_scale: tuple[float, float] = (0.5, 1.02)


class TumourSeed(NamedTuple):
  """The initial condition's fixed shape: peak amplitude and width (standard deviation, length units)."""

  amplitude: float = 0.8
  width: float = 4.0


DEFAULT_WEIGHTS, DEFAULT_BOUNDS, DEFAULT_SEED = OdilWeights(), OdilBounds(), TumourSeed()


class OdilState(NamedTuple):
  """State of the optax-driven optimisation: the unknowns and the optimiser's state."""

  unknowns: OdilUnknowns
  opt_state: Any


class OdilStepInfo(NamedTuple):
  """Per-step diagnostics: the loss before the step."""

  loss: jax.Array


class OdilResult(NamedTuple):
  """Result of :func:`fit` / :func:`gauss_newton`.

  Attributes:
    unknowns: the final :class:`OdilUnknowns`.
    field: ``(N + 1, n_1, ..., n_d)`` the final tumour density at times ``0, Δt, ..., T``.
    losses: ``(num_iterations,)`` the loss before each iteration.
    loss: the final loss.
  """

  unknowns: OdilUnknowns
  field: jax.Array
  losses: jax.Array
  loss: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# Checks.


def _check_scan(scan: Any) -> tuple[int, ...]:
  if not isinstance(scan, TumourScan):
    raise TypeError(f"`scan` must be an odil.TumourScan, got {type(scan).__name__}.")
  if not isinstance(scan.tissue, tg.TissueMaps):
    raise TypeError(f"scan.tissue must be a TissueMaps, got {type(scan.tissue).__name__}.")
  shape = tg.check_spatial(scan.tissue.white, "scan.tissue.white").shape
  if jnp.shape(scan.labels) != shape:
    raise ValueError(f"scan.labels must have the tissue's shape {shape}, got {jnp.shape(scan.labels)}.")
  if not jnp.issubdtype(jnp.asarray(scan.labels).dtype, jnp.integer):
    raise TypeError(f"scan.labels must be an integer array (0, 1, 2), got dtype {jnp.asarray(scan.labels).dtype}.")
  if scan.pet is not None and jnp.shape(scan.pet) != shape:
    raise ValueError(f"scan.pet must be None or have the tissue's shape {shape}, got {jnp.shape(scan.pet)}.")
  tg.check_positive(scan.duration, "scan.duration")
  tg.check_positive(scan.spacing, "scan.spacing")
  return shape


def _check_unknowns(unknowns: Any, shape: tuple[int, ...]) -> None:
  if not isinstance(unknowns, OdilUnknowns):
    raise TypeError(f"`unknowns` must be an odil.OdilUnknowns, got {type(unknowns).__name__}.")
  if not isinstance(unknowns.params, GliodilParams):
    raise TypeError(f"unknowns.params must be a GliodilParams, got {type(unknowns.params).__name__}.")
  if not unknowns.levels:
    raise ValueError("unknowns.levels must hold at least one array.")
  fine = jnp.shape(unknowns.levels[0])
  if len(fine) != len(shape) + 1 or fine[1:] != shape or fine[0] < 2:
    raise ValueError(f"unknowns.levels[0] must have shape (N + 1, *{shape}) with N >= 1, got {fine}.")
  for l, level in enumerate(unknowns.levels):
    want = level_shape(fine, l)
    if jnp.shape(level) != want:
      raise ValueError(f"unknowns.levels[{l}] must have shape {want}, got {jnp.shape(level)}.")
  if jnp.shape(unknowns.params.centre) != (len(shape),):
    raise ValueError(f"params.centre must have shape ({len(shape)},), got {jnp.shape(unknowns.params.centre)}.")


def _check_type(value: Any, cls: type, name: str) -> None:
  if not isinstance(value, cls):
    raise TypeError(f"`{name}` must be an odil.{cls.__name__}, got {type(value).__name__}.")


def _check_optimizer(optimizer: Any) -> None:
  if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")


# ----------------------------------------------------------------------------------------------------------------
# The field and the loss.


def level_shape(shape: tuple[int, ...], level: int) -> tuple[int, ...]:
  """Shape of multigrid level ``level`` of a field of ``shape``: every axis coarsened 2^level times (≥ 2)."""
  if isinstance(level, bool) or not isinstance(level, int | np.integer) or level < 0:
    raise ValueError(f"`level` must be an integer >= 0, got {level!r}.")
  return tuple(max(2, -(-n // 2**level)) for n in shape)


def field_from_levels(levels: tuple[jax.Array, ...]) -> jax.Array:
  """The field ``Σ_l upsample(v_l)`` (multilinear interpolation to the finest level's shape)."""
  if not isinstance(levels, tuple | list):
    raise TypeError(f"`levels` must be a tuple of arrays (finest first), got {type(levels).__name__}.")
  if not levels:
    raise ValueError("`levels` must hold at least one array.")
  shape = np.shape(levels[0])
  for l, level in enumerate(levels[1:], 1):
    if np.ndim(level) != len(shape):
      raise ValueError(f"`levels[{l}]` must have the finest level's {len(shape)} axes, got shape {np.shape(level)}.")
  out = levels[0]
  for level in levels[1:]:
    out = out + jax.image.resize(level, shape, method="linear")
  return out


def make_unknowns(field: jax.Array, params: GliodilParams, *, num_levels: int = 1) -> OdilUnknowns:
  """:class:`OdilUnknowns` holding ``field`` in the finest level and zeros in the ``num_levels - 1`` coarser ones."""
  tg.check_count(num_levels, "num_levels")
  _check_type(params, GliodilParams, "params")
  field = jnp.asarray(field)
  if not jnp.issubdtype(field.dtype, jnp.floating):
    raise TypeError(f"`field` must be a floating-point array, got dtype {field.dtype}.")
  if not 2 <= field.ndim <= 4 or field.shape[0] < 2:
    raise ValueError(f"`field` must have shape (N + 1, n_1, ..., n_d) with N >= 1 and d in 1..3, got {field.shape}.")
  levels = (field,) + tuple(jnp.zeros(level_shape(field.shape, l), field.dtype) for l in range(1, num_levels))
  return OdilUnknowns(levels, params)


def _relu(x):
  return jnp.maximum(x, 0.0)


def _interval(x, lo_hi):
  lo, hi = lo_hi
  return _relu(lo - x) + _relu(x - hi)


def pde_residual(
  u: jax.Array, tissue: tg.TissueMaps, d_white: Any, ratio: Any, rho: Any, *, duration: Any, spacing: Any
) -> jax.Array:
  """The Crank–Nicolson residual of u_t = ∇·(D∇u) + ρ|u|(1 - u) at steps n = 1..N.

  Args:
    u: ``(N + 1, n_1, ..., n_d)`` densities at times ``0, Δt, ..., T`` (Δt = duration / N).
    tissue: :class:`toolkit.pde.tumour_growth.TissueMaps` of the spatial shape.
    d_white, ratio, rho: D_w, r = D_w / D_g and ρ.
    duration: T.
    spacing: grid spacing h.

  Returns:
    ``(N, n_1, ..., n_d)``: ``(u^n - u^{n-1})/Δt - ½[L u^n + L u^{n-1}] - ½[f(u^n) + f(u^{n-1})]`` (zero for a
    Crank–Nicolson solution; units of u per time).

  >>> import jax.numpy as jnp
  >>> from toolkit.pde import tumour_growth as tg
  >>> tissue = tg.TissueMaps(jnp.ones((12, 12)), jnp.zeros((12, 12)), jnp.zeros((12, 12)))
  >>> u0 = tg.gaussian_seed((12, 12), jnp.array([6.0, 6.0]), 1.0, width=2.0)
  >>> u = tg.simulate(u0, tg.diffusion_faces(tissue, 0.5, 10.0), 0.3, duration=4.0, num_steps=8, spacing=1.0)
  >>> r = pde_residual(u, tissue, 0.5, 10.0, 0.3, duration=4.0, spacing=1.0)
  >>> print(r.shape, bool(jnp.abs(r).max() < 1e-4))
  (8, 12, 12) True
  """
  u = jnp.asarray(u)
  ndim = u.ndim - 1
  if ndim < 1 or u.shape[0] < 2:
    raise ValueError(f"`u` must have shape (N + 1, *spatial) with N >= 1, got {u.shape}.")
  if jnp.shape(tissue.white) != u.shape[1:]:
    raise ValueError(f"`u`'s spatial shape {u.shape[1:]} must match the tissue's {jnp.shape(tissue.white)}.")
  tg.check_positive(duration, "duration")
  tg.check_positive(spacing, "spacing")
  dt = duration / (u.shape[0] - 1)
  faces = tg.diffusion_faces(tissue, d_white, ratio)
  rhs = tg.divergence(u, faces, spacing) + tg.reaction(u, rho)
  return (u[1:] - u[:-1]) / dt - 0.5 * (rhs[1:] + rhs[:-1])


def residual_terms(
  unknowns: OdilUnknowns, scan: TumourScan, *, seed: TumourSeed = DEFAULT_SEED, bounds: OdilBounds = DEFAULT_BOUNDS
) -> dict[str, jax.Array]:
  """The unweighted residual arrays of every loss term (see the module's table), keyed by term name."""
  shape = _check_scan(scan)
  _check_type(seed, TumourSeed, "seed")
  _check_type(bounds, OdilBounds, "bounds")
  _check_unknowns(unknowns, shape)
  p = unknowns.params
  u = field_from_levels(unknowns.levels)
  tissue, labels = scan.tissue, jnp.asarray(scan.labels)
  d_white, rho, ratio = p.d_white, p.rho, p.ratio
  terms = {
    "pde": pde_residual(u, tissue, d_white, ratio, rho, duration=scan.duration, spacing=scan.spacing),
    "initial": u[0] - tg.gaussian_seed(shape, p.centre, scan.spacing, amplitude=seed.amplitude, width=seed.width),
  }
  u_final = u[-1]
  core = _relu(p.theta_up - u_final)
  edema = _relu(p.theta_down - u_final) + _relu(u_final - p.theta_up)
  background = _relu(u_final - p.theta_down)
  terms["segmentation"] = jnp.where(labels == tg.CORE, core, jnp.where(labels == tg.EDEMA, edema, background))
  if scan.pet is not None:
    pet = jnp.asarray(scan.pet)
    terms["pet"] = jnp.where(pet > 0.1, u_final - p.pet_scale * pet, 0.0)
  terms["range"] = _relu(-u) + _relu(u - 1.0)
  terms["csf"] = jnp.where(tissue.white + tissue.grey < tg.TISSUE_THRESHOLD, u, 0.0)
  terms["bounds"] = jnp.stack(
    [
      _interval(d_white, bounds.d_white),
      _interval(rho, bounds.rho),
      _interval(p.log10_ratio, tuple(math.log10(b) for b in bounds.ratio)),
      _interval(p.theta_down, bounds.theta_down),
      _interval(p.theta_up, bounds.theta_up),
      _interval(p.pet_scale, bounds.pet_scale),
    ]
  )
  return terms


def weighted_residuals(
  unknowns: OdilUnknowns,
  scan: TumourScan,
  *,
  weights: OdilWeights = DEFAULT_WEIGHTS,
  seed: TumourSeed = DEFAULT_SEED,
  bounds: OdilBounds = DEFAULT_BOUNDS,
) -> jax.Array:
  """All residuals stacked into one vector R, each term scaled by ``sqrt(w / size)``, so that ``|R|² = loss``."""
  _check_type(weights, OdilWeights, "weights")
  terms = residual_terms(unknowns, scan, seed=seed, bounds=bounds)
  return jnp.concatenate([jnp.sqrt(getattr(weights, name) / r.size) * r.ravel() for name, r in terms.items()])


def loss(
  unknowns: OdilUnknowns,
  scan: TumourScan,
  *,
  weights: OdilWeights = DEFAULT_WEIGHTS,
  seed: TumourSeed = DEFAULT_SEED,
  bounds: OdilBounds = DEFAULT_BOUNDS,
) -> jax.Array:
  """GliODIL's loss ``Σ_k w_k mean(r_k²)`` over the terms of :func:`residual_terms`.

  Args:
    unknowns: the field (multigrid levels) and the parameters.
    scan: the patient's tissue and final-time data.
    weights: the terms' weights.
    seed: the initial Gaussian's amplitude and width.
    bounds: the parameters' ranges.

  Returns:
    The scalar loss.

  >>> import jax.numpy as jnp
  >>> from toolkit.pde import tumour_growth as tg
  >>> tissue = tg.TissueMaps(jnp.ones((12, 12)), jnp.zeros((12, 12)), jnp.zeros((12, 12)))
  >>> params = make_params(0.5, 0.3, 10.0, [6.0, 6.0])
  >>> u0 = tg.gaussian_seed((12, 12), params.centre, 1.0)
  >>> u = tg.simulate(u0, tg.diffusion_faces(tissue, 0.5, 10.0), 0.3, duration=4.0, num_steps=8, spacing=1.0)
  >>> scan = TumourScan(tissue, tg.segment(u[-1], 0.25, 0.6), None, 4.0, 1.0)
  >>> print(bool(loss(make_unknowns(u, params), scan) < 1e-8))  # the truth: every term ~ 0
  True
  """
  _check_type(weights, OdilWeights, "weights")
  terms = residual_terms(unknowns, scan, seed=seed, bounds=bounds)
  return sum(getattr(weights, name) * jnp.mean(r**2) for name, r in terms.items())


# ----------------------------------------------------------------------------------------------------------------
# Initial guess.


def initial_guess(
  scan: TumourScan,
  num_steps: int,
  *,
  d_white: float,
  rho: float,
  ratio: float,
  seed: TumourSeed = DEFAULT_SEED,
  horizon: float = 3.0,
  search_radius: int = 2,
  num_levels: int = 1,
) -> OdilUnknowns:
  """GliODIL's initial guess: a forward run with characteristic parameters, stopped where it best fits the lesion.

  Seeds are tried at the PET-weighted (else plain) centroid of the core (else of the whole lesion) and at the cells
  up to ``search_radius`` away along each axis (our addition: the centre is the unknown first-order optimisers move
  least). From each, the forward model runs with (D_w, ρ, r) up to ``horizon × T``; the seed and the time t* whose
  visible lesion (u ≥ 0.25) has the best Dice with the scan's are kept. Running to t* equals running to T with
  ``D_w t*/T`` and ``ρ t*/T``, so those are
  the initial parameters and the run, resampled to the grid's N + 1 times, is the initial field: it satisfies the
  discrete PDE up to the resampling.

  Args:
    scan: the patient's data.
    num_steps: N, time steps of the field.
    d_white, rho, ratio: the characteristic parameters.
    seed: the initial Gaussian's shape.
    horizon: how far (in units of T) the forward run may go.
    search_radius: candidate seeds per axis on each side of the centroid, in cells (0: the centroid only).
    num_levels: multigrid levels of the returned unknowns.

  Returns:
    :class:`OdilUnknowns`.
  """
  shape = _check_scan(scan)
  tg.check_count(num_steps, "num_steps")
  tg.check_count(search_radius, "search_radius", minimum=0)
  tg.check_count(num_levels, "num_levels")
  tg.check_positive(horizon, "horizon")
  if round(horizon * num_steps) < 1:
    raise ValueError(f"`horizon` × num_steps must round to >= 1 step of the forward run, got {horizon} × {num_steps}.")
  _check_type(seed, TumourSeed, "seed")
  labels = np.asarray(scan.labels)
  region = labels == tg.CORE if (labels == tg.CORE).any() else labels > 0
  if not region.any():
    raise ValueError("scan.labels shows no lesion: nothing to fit.")
  weight = region * (np.asarray(scan.pet) if scan.pet is not None else 1.0) + 1e-12 * region
  h = float(scan.spacing)
  coords = np.meshgrid(*[(np.arange(n) + 0.5) * h for n in shape], indexing="ij")
  centroid = np.array([(c * weight).sum() / weight.sum() for c in coords])
  offsets = np.stack(
    np.meshgrid(*[np.arange(-search_radius, search_radius + 1)] * len(shape), indexing="ij"), -1
  ).reshape(-1, len(shape))
  centres = jnp.asarray(centroid + h * offsets, jnp.float32)
  faces = tg.diffusion_faces(scan.tissue, d_white, ratio)
  num_run = round(horizon * num_steps)

  @jax.jit
  def runs(centres):
    def one(c):
      u0 = tg.gaussian_seed(shape, c, h, amplitude=seed.amplitude, width=seed.width)
      return tg.simulate(u0, faces, rho, duration=horizon * float(scan.duration), num_steps=num_run, spacing=h)

    return jax.lax.map(one, centres)

  us_all = np.asarray(runs(centres))  # (candidates, num_run + 1, *shape)
  visible = labels > 0
  dices = np.array([[tg.dice(u >= 0.25, visible) for u in us] for us in us_all])
  which, best = np.unravel_index(np.argmax(dices), dices.shape)
  best = max(1, int(best))
  us, centre = us_all[which], np.asarray(centres[which])
  frac = best / num_run * horizon  # t* / T
  # Resample the run on [0, t*] at N + 1 equal times (linear in time).
  t = np.linspace(0.0, best, num_steps + 1)
  lo = np.minimum(np.floor(t).astype(int), best - 1)
  w = (t - lo).reshape((-1,) + (1,) * len(shape))
  field = (1 - w) * us[lo] + w * us[lo + 1]
  params = make_params(d_white * frac, rho * frac, ratio, centre)
  return make_unknowns(jnp.asarray(field, jnp.float32), params, num_levels=num_levels)


# ----------------------------------------------------------------------------------------------------------------
# Optimisation with optax.


def init(unknowns: OdilUnknowns, optimizer: optax.GradientTransformation) -> OdilState:
  """The optimisation state: the unknowns and ``optimizer.init(unknowns)``."""
  if not isinstance(unknowns, OdilUnknowns):
    raise TypeError(f"`unknowns` must be an odil.OdilUnknowns, got {type(unknowns).__name__}.")
  _check_optimizer(optimizer)
  return OdilState(unknowns, optimizer.init(unknowns))


def step(
  state: OdilState,
  scan: TumourScan,
  *,
  optimizer: optax.GradientTransformation,
  weights: OdilWeights = DEFAULT_WEIGHTS,
  seed: TumourSeed = DEFAULT_SEED,
  bounds: OdilBounds = DEFAULT_BOUNDS,
) -> tuple[OdilState, OdilStepInfo]:
  """One optimiser step on the GliODIL loss (deterministic: no key).

  Works with any optax transformation; those that take ``value``, ``grad`` and ``value_fn`` (``optax.lbfgs`` and
  its line search) receive them.
  """
  _check_type(state, OdilState, "state")
  _check_optimizer(optimizer)

  def value_fn(x):
    return loss(x, scan, weights=weights, seed=seed, bounds=bounds)

  value, grad = jax.value_and_grad(value_fn)(state.unknowns)
  opt = optax.with_extra_args_support(optimizer)
  updates, opt_state = opt.update(grad, state.opt_state, state.unknowns, value=value, grad=grad, value_fn=value_fn)
  return OdilState(optax.apply_updates(state.unknowns, updates), opt_state), OdilStepInfo(value)


def fit(
  unknowns: OdilUnknowns,
  scan: TumourScan,
  *,
  optimizer: optax.GradientTransformation | None = None,
  num_iterations: int = 1000,
  weights: OdilWeights = DEFAULT_WEIGHTS,
  seed: TumourSeed = DEFAULT_SEED,
  bounds: OdilBounds = DEFAULT_BOUNDS,
) -> OdilResult:
  """Minimises the GliODIL loss over the field and the parameters: :func:`init`, then ``lax.scan`` of :func:`step`.

  Args:
    unknowns: the starting point (e.g. :func:`initial_guess`).
    scan: the patient's tissue and final-time data.
    optimizer: an optax transformation (default ``optax.lbfgs()``).
    num_iterations: optimiser steps.
    weights, seed, bounds: see :func:`loss`.

  Returns:
    :class:`OdilResult`.

  >>> import jax.numpy as jnp
  >>> from toolkit.pde import tumour_growth as tg
  >>> tissue = tg.TissueMaps(jnp.ones((12, 12)), jnp.zeros((12, 12)), jnp.zeros((12, 12)))
  >>> u0 = tg.gaussian_seed((12, 12), jnp.array([6.0, 6.0]), 1.0)
  >>> u = tg.simulate(u0, tg.diffusion_faces(tissue, 0.5, 10.0), 0.3, duration=4.0, num_steps=8, spacing=1.0)
  >>> labels = tg.segment(u[-1], 0.25, 0.6)
  >>> scan = TumourScan(tissue, labels, tg.pet_signal(u[-1], labels), 4.0, 1.0)
  >>> start = make_unknowns(jnp.linspace(0, 1, 9)[:, None, None] * u[-1], make_params(1.0, 0.2, 10.0, [6.0, 6.0]))
  >>> out = fit(start, scan, num_iterations=30)
  >>> print(bool(out.loss < 0.01 * out.losses[0]))
  True
  """
  tg.check_count(num_iterations, "num_iterations")
  optimizer = optax.lbfgs() if optimizer is None else optimizer
  _check_unknowns(unknowns, _check_scan(scan))

  def body(state, _):
    return step(state, scan, optimizer=optimizer, weights=weights, seed=seed, bounds=bounds)

  state, info = jax.lax.scan(body, init(unknowns, optimizer), None, length=num_iterations)
  final = state.unknowns
  return OdilResult(
    final,
    field_from_levels(final.levels),
    info.loss,
    loss(final, scan, weights=weights, seed=seed, bounds=bounds),
  )


# ----------------------------------------------------------------------------------------------------------------
# Gauss–Newton with matrix-free CG.


def gauss_newton(
  unknowns: OdilUnknowns,
  scan: TumourScan,
  *,
  num_iterations: int = 10,
  num_cg_iterations: int = 100,
  damping: float = 1e-3,
  weights: OdilWeights = DEFAULT_WEIGHTS,
  seed: TumourSeed = DEFAULT_SEED,
  bounds: OdilBounds = DEFAULT_BOUNDS,
) -> OdilResult:
  """Levenberg–Marquardt-damped Gauss–Newton on the stacked residuals R (``loss = |R|²``), CG without a matrix.

  Each iteration solves ``(JᵀJ + λI) δ = -JᵀR`` by ``num_cg_iterations`` of ``jax.scipy.sparse.linalg.cg`` whose
  products are ``Jᵀ(Jv)`` through ``jax.linearize`` (a jvp) and ``jax.vjp``; the step is taken if it lowers the
  loss (then λ /= 3), else λ \\*= 3 and the unknowns stay. ODIL's Newton method, without its multigrid solver.

  Args:
    unknowns: the starting point.
    scan: the patient's data.
    num_iterations: Gauss–Newton iterations.
    num_cg_iterations: CG iterations per linear solve.
    damping: the initial λ (relative to the loss scale: the unknowns are O(1)).
    weights, seed, bounds: see :func:`loss`.

  Returns:
    :class:`OdilResult`.

  >>> import jax.numpy as jnp
  >>> from toolkit.pde import tumour_growth as tg
  >>> tissue = tg.TissueMaps(jnp.ones((10,)), jnp.zeros((10,)), jnp.zeros((10,)))
  >>> u0 = tg.gaussian_seed((10,), jnp.array([5.0]), 1.0)
  >>> u = tg.simulate(u0, tg.diffusion_faces(tissue, 0.5, 10.0), 0.3, duration=2.0, num_steps=4, spacing=1.0)
  >>> labels = tg.segment(u[-1], 0.25, 0.6)
  >>> scan = TumourScan(tissue, labels, tg.pet_signal(u[-1], labels), 2.0, 1.0)
  >>> start = make_unknowns(jnp.broadcast_to(u0, u.shape), make_params(0.5, 0.3, 10.0, [5.0]))
  >>> out = gauss_newton(start, scan, num_iterations=5)
  >>> print(bool(out.loss < 1e-3 * out.losses[0]))
  True
  """
  tg.check_count(num_iterations, "num_iterations")
  tg.check_count(num_cg_iterations, "num_cg_iterations")
  tg.check_positive(damping, "damping")
  _check_unknowns(unknowns, _check_scan(scan))
  flat0, unravel = ravel_pytree(unknowns)

  def residual(flat):
    return weighted_residuals(unravel(flat), scan, weights=weights, seed=seed, bounds=bounds)

  def body(carry, _):
    flat, lam = carry
    r, jvp = jax.linearize(residual, flat)
    _, vjp = jax.vjp(residual, flat)
    value = jnp.sum(r**2)

    def normal(v):
      return vjp(jvp(v))[0] + lam * v

    delta, _ = cg(normal, -vjp(r)[0], maxiter=num_cg_iterations)
    trial = flat + delta
    new_value = jnp.sum(residual(trial) ** 2)
    better = new_value < value
    flat = jnp.where(better, trial, flat)
    lam = jnp.where(better, lam / 3.0, lam * 3.0)
    return (flat, lam), value

  (flat, _), losses = jax.lax.scan(body, (flat0, jnp.asarray(damping, flat0.dtype)), None, length=num_iterations)
  final = unravel(flat)
  return OdilResult(final, field_from_levels(final.levels), losses, jnp.sum(residual(flat) ** 2))
