r"""Voronoi losses between mixing measures of Gaussian MoEs, and the expected Hellinger distance of their densities.

The metrics of Nguyen, Akbarian, Yan, Ho, "Statistical Perspective of Top-K Sparse Softmax Gating Mixture of
Experts", ICLR 2024, arXiv 2309.13850 (§3: the exact-specified loss D₁; §4: the over-specified loss D₂), kept apart
from the model (``toolkit.stats.topk_moe``).

A fitted mixing measure ``G = Σ_i exp(β0_i) δ_θi``, ``θ_i = (β1_i, a_i, b_i, σ_i)``, is compared with the true
``G* = Σ_j exp(β0*_j) δ_θ*j`` through the Voronoi cells ``A_j = {i : ‖θ_i − θ*_j‖ ≤ ‖θ_i − θ*_l‖ ∀ l}`` (each fitted
atom goes to its nearest true atom; ties to the lower index):

  D₁(G, G*) = Σ_j Σ_{i∈A_j} exp(β0_i) (‖Δβ1_ij‖ + ‖Δa_ij‖ + |Δb_ij| + |Δσ_ij|) + Σ_j |Σ_{i∈A_j} exp(β0_i) − exp(β0*_j)|,

and D₂ the same with, for the atoms of a cell of cardinality ``m = |A_j| > 1``, the powers
``‖Δβ1‖^r̄(m) + ‖Δa‖^(r̄(m)/2) + |Δb|^r̄(m) + |Δσ|^(r̄(m)/2)``, where ``r̄(m)`` is the solvability index of the
polynomial system of Ho & Nguyen (2016): ``r̄(2) = 4``, ``r̄(3) = 6``. The exact-specified MLE has
``D₁(Ĝ_n, G*) = O(√(log n / n))``; the over-specified one ``D₂(Ĝ_n, G*) = O(√(log n / n))``.

Provenance and our choices. The two formulas and ``r̄`` are as recalled from the paper's §3–4 (not checked against
its text here; the abstract, read, states the rates qualitatively). The paper fixes the gating translation by its
identifiability convention; here **our choice** is to bring ``G`` to the translation of ``G*`` first
(:func:`align_translation`): the common scalar added to the ``β0`` makes the total masses equal
(``Σ_i exp(β0_i) = Σ_j exp(β0*_j)``), the common vector added to the ``β1`` makes the mass-weighted means of the
``β1`` equal. Both losses are then invariant to permutations of either measure and to gating translations of ``G``,
and vanish at ``G = G*``. The density metric (**our choice** of the quantity the claims measure) is the expected
Hellinger distance ``E_X h(g_G(·|X), g_G*(·|X))`` with ``h² = ½ ∫ (√g − √g*)² dy``, averaged over given covariates
and integrated over ``y`` on a grid.

>>> from toolkit.stats import topk_moe, voronoi
>>> g = topk_moe.topk_moe_params([0.5, 0.0], [[-2.0], [2.0]], [[-1.0], [2.0]], [1.0, 0.5], [0.3, 0.4])
>>> print(float(voronoi.voronoi_loss_exact(g, g)))
0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from toolkit import _checks
from toolkit.stats import topk_moe

# r̄(m), the solvability index of Ho & Nguyen (2016), by cell cardinality m (index 0 unused; m = 1 is not a power).
SOLVABILITY_INDEX = (0, 1, 4, 6)


def _check_measures(params, true_params) -> None:
  topk_moe.check_params(params)
  try:
    topk_moe.check_params(true_params)
  except (TypeError, ValueError) as err:  # its messages say `params`: say which argument it was
    raise type(err)(f"`true_params`: {err}") from None
  if params.dim != true_params.dim:
    raise ValueError(f"`params` (d = {params.dim}) and `true_params` (d = {true_params.dim}) differ in dimension.")


def align_translation(params: topk_moe.TopKMoEParams, true_params: topk_moe.TopKMoEParams):
  """``params`` translated in its gating (``β0 + c0``, ``β1 + c1``, which leaves the model unchanged) to ``G*``'s.

  ``c0`` equalises the total masses ``Σ exp(β0)``; ``c1`` the mass-weighted means of the ``β1`` (our convention).

  >>> g = topk_moe.topk_moe_params([0.0, 1.0], [[1.0], [3.0]], [[0.0], [0.0]], [0.0, 0.0], [1.0, 1.0])
  >>> moved = g._replace(gate_bias=g.gate_bias + 2.0, gate_weight=g.gate_weight - 5.0)
  >>> print(bool(jnp.allclose(align_translation(moved, g).gate_weight, g.gate_weight, atol=1e-5)))
  True
  """
  _check_measures(params, true_params)
  gate_bias = params.gate_bias - jax.nn.logsumexp(params.gate_bias) + jax.nn.logsumexp(true_params.gate_bias)
  w, w_true = jax.nn.softmax(params.gate_bias), jax.nn.softmax(true_params.gate_bias)
  shift = w_true @ true_params.gate_weight - w @ params.gate_weight
  return params._replace(gate_bias=gate_bias, gate_weight=params.gate_weight + shift)


def _atoms(params: topk_moe.TopKMoEParams) -> jax.Array:
  return jnp.concatenate(
    [params.gate_weight, params.expert_weight, params.expert_bias[:, None], params.variance[:, None]], axis=1
  )


def voronoi_cells(params: topk_moe.TopKMoEParams, true_params: topk_moe.TopKMoEParams) -> jax.Array:
  """``(k,)`` int32: the true atom whose Voronoi cell holds each fitted atom (after :func:`align_translation`).

  >>> g = topk_moe.topk_moe_params([0.0, 0.0], [[-1.0], [1.0]], [[0.0], [0.0]], [0.0, 3.0], [1.0, 1.0])
  >>> print(voronoi_cells(g._replace(expert_bias=jnp.array([2.9, 0.1])), g))
  [1 0]
  """
  return _cells(align_translation(params, true_params), true_params)


def _cells(params: topk_moe.TopKMoEParams, true_params: topk_moe.TopKMoEParams) -> jax.Array:
  dist = jnp.linalg.norm(_atoms(params)[:, None, :] - _atoms(true_params)[None, :, :], axis=-1)
  return jnp.argmin(dist, axis=1).astype(jnp.int32)


def _loss(params, true_params, exponents) -> jax.Array:
  params = align_translation(params, true_params)
  cell = _cells(params, true_params)
  k_true = true_params.num_experts
  mass = jnp.exp(params.gate_bias)
  size = jnp.sum(jax.nn.one_hot(cell, k_true, dtype=jnp.int32), axis=0)
  power_gate, power_expert = exponents(size[cell])
  d_gate = jnp.linalg.norm(params.gate_weight - true_params.gate_weight[cell], axis=1)
  d_slope = jnp.linalg.norm(params.expert_weight - true_params.expert_weight[cell], axis=1)
  d_bias = jnp.abs(params.expert_bias - true_params.expert_bias[cell])
  d_var = jnp.abs(params.variance - true_params.variance[cell])
  atoms = mass * (d_gate**power_gate + d_bias**power_gate + d_slope**power_expert + d_var**power_expert)
  cell_mass = jax.ops.segment_sum(mass, cell, num_segments=k_true)
  return jnp.sum(atoms) + jnp.sum(jnp.abs(cell_mass - jnp.exp(true_params.gate_bias)))


def voronoi_loss_exact(params: topk_moe.TopKMoEParams, true_params: topk_moe.TopKMoEParams) -> jax.Array:
  """D₁(G, G*), the Voronoi loss of the exact-specified case (arXiv 2309.13850, §3), a scalar.

  Every difference enters at power 1. Invariant to permutations and gating translations; zero at ``G = G*``.

  >>> g = topk_moe.topk_moe_params([0.0, 0.0], [[-1.0], [1.0]], [[0.0], [0.0]], [0.0, 3.0], [1.0, 1.0])
  >>> print(round(float(voronoi_loss_exact(g._replace(expert_bias=jnp.array([0.1, 3.0])), g)), 4))  # e^0 · 0.1
  0.1
  """
  return _loss(params, true_params, lambda size: (1.0, 1.0))


def voronoi_loss_over(
  params: topk_moe.TopKMoEParams,
  true_params: topk_moe.TopKMoEParams,
  *,
  solvability_index: Sequence[int] = SOLVABILITY_INDEX,
) -> jax.Array:
  """D₂(G, G*), the Voronoi loss of the over-specified case (arXiv 2309.13850, §4), a scalar.

  Args:
    params: the fitted measure, ``k ≥ k*`` atoms.
    true_params: the true measure, ``k*`` atoms.
    solvability_index: ``r̄(m)`` indexed by the cell cardinality ``m`` (entry 0 unused); the default knows
      ``r̄(2) = 4`` and ``r̄(3) = 6``, so cells of up to 3 atoms (``k − k* ≤ 2``); pass a longer table beyond.

  >>> g = topk_moe.topk_moe_params([0.0, 0.0], [[-1.0], [1.0]], [[0.0], [0.0]], [0.0, 3.0], [1.0, 1.0])
  >>> half = float(jnp.log(0.5))  # the first true atom split in two halves, 0.1 away on each side in b
  >>> split = topk_moe.topk_moe_params([half, half, 0.0], [[-1.0], [-1.0], [1.0]], [[0.0], [0.0], [0.0]],
  ...                                  [0.1, -0.1, 3.0], [1.0, 1.0, 1.0])
  >>> print(round(float(voronoi_loss_over(split, g)), 6))  # 2 · 0.5 · 0.1^r̄(2), r̄(2) = 4
  0.0001
  """
  k, k_true = params.gate_bias.shape[-1], true_params.gate_bias.shape[-1]
  table = tuple(int(r) for r in solvability_index)
  if k < k_true:
    raise ValueError(f"`params` must have at least as many experts as `true_params`, got {k} < {k_true}.")
  if len(table) < k - k_true + 2 or any(r < 1 for r in table[1:]):
    raise ValueError(
      f"`solvability_index` must give r̄(m) >= 1 for m = 1..{k - k_true + 1} (k = {k}, k* = {k_true}), got "
      f"{solvability_index!r}."
    )
  r_bar = jnp.asarray(table, jnp.result_type(float))

  def exponents(size):
    r = r_bar[size]
    return jnp.where(size > 1, r, 1.0), jnp.where(size > 1, r / 2, 1.0)

  return _loss(params, true_params, exponents)


def conditional_hellinger(
  params: topk_moe.TopKMoEParams,
  true_params: topk_moe.TopKMoEParams,
  x: jax.Array,
  *,
  num_selected: int,
  true_num_selected: int,
  num_points: int = 512,
  num_sd: float = 8.0,
) -> jax.Array:
  """``(m,)`` Hellinger distances ``h(g_G(·|x), g_G*(·|x))``, ``h² = ½ ∫ (√g − √g*)² dy``, for each row of ``x``.

  The integral over ``y`` is a midpoint rule on ``num_points`` points spanning every expert's mean ± ``num_sd``
  standard deviations at that ``x`` (both models).

  >>> a = topk_moe.topk_moe_params([0.0], [[0.0]], [[0.0]], [0.0], [1.0])
  >>> b = a._replace(expert_bias=jnp.array([1.0]))
  >>> h = conditional_hellinger(a, b, jnp.zeros((1, 1)), num_selected=1, true_num_selected=1)
  >>> print(round(float(h[0]), 4), round(float(jnp.sqrt(1 - jnp.exp(-1 / 8))), 4))  # closed form for N(0,1), N(1,1)
  0.3428 0.3428
  """
  if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
    raise ValueError(f"`num_points` must be a Python int >= 2, got {num_points!r}.")
  _check_measures(params, true_params)
  # num_sd <= 0 makes the y grid empty or reversed, and the distance 0 or NaN.
  _checks.check_positive(num_sd, "num_sd")
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[1] != params.dim:
    raise ValueError(f"`x` must have shape (m, d) with d = {params.dim}, got {x.shape}.")

  def bounds(p):
    mean = x @ p.expert_weight.T + p.expert_bias
    sd = jnp.sqrt(p.variance)
    return jnp.min(mean - num_sd * sd, axis=1), jnp.max(mean + num_sd * sd, axis=1)

  lo1, hi1 = bounds(params)
  lo2, hi2 = bounds(true_params)
  lo, hi = jnp.minimum(lo1, lo2), jnp.maximum(hi1, hi2)
  width = (hi - lo) / num_points
  grid = lo[:, None] + width[:, None] * (jnp.arange(num_points) + 0.5)  # (m, num_points)
  m = x.shape[0]
  xs = jnp.repeat(x, num_points, axis=0)
  log_g = topk_moe.log_density(params, xs, grid.reshape(-1), num_selected=num_selected).reshape(m, num_points)
  log_g_true = topk_moe.log_density(true_params, xs, grid.reshape(-1), num_selected=true_num_selected)
  diff = jnp.exp(0.5 * log_g) - jnp.exp(0.5 * log_g_true.reshape(m, num_points))
  return jnp.sqrt(0.5 * width * jnp.sum(diff**2, axis=1))


def expected_hellinger(
  params: topk_moe.TopKMoEParams,
  true_params: topk_moe.TopKMoEParams,
  x: jax.Array,
  *,
  num_selected: int,
  true_num_selected: int,
  num_points: int = 512,
) -> jax.Array:
  """``E_X h(g_G(·|X), g_G*(·|X))`` estimated by the mean of :func:`conditional_hellinger` over the rows of ``x``.

  >>> g = topk_moe.topk_moe_params([0.5, 0.0], [[-2.0], [2.0]], [[-1.0], [2.0]], [1.0, 0.5], [0.3, 0.4])
  >>> x = jnp.linspace(-1, 1, 5)[:, None]
  >>> print(float(expected_hellinger(g, g, x, num_selected=2, true_num_selected=2)))
  0.0
  """
  return jnp.mean(
    conditional_hellinger(
      params, true_params, x, num_selected=num_selected, true_num_selected=true_num_selected, num_points=num_points
    )
  )


def min_num_selected(params: topk_moe.TopKMoEParams, true_params: topk_moe.TopKMoEParams, true_num_selected: int):
  """The Voronoi-cardinality rule: the largest total cardinality of ``K*`` Voronoi cells, a traced int scalar.

  The over-specified result of the paper (arXiv 2309.13850, §4; the abstract states it qualitatively) needs the
  fitted model to select at least ``max_{ℓ1 < … < ℓK*} Σ_j |A_ℓj|`` experts, i.e. the sum of the ``K*`` largest
  cell cardinalities of ``G``'s atoms around ``G*``, for its density estimate to converge.

  >>> g = topk_moe.topk_moe_params([0.0, 0.0], [[-1.0], [1.0]], [[0.0], [0.0]], [0.0, 3.0], [1.0, 1.0])
  >>> split = jax.tree.map(lambda leaf: leaf[jnp.array([0, 0, 1])], g)  # the first atom doubled: cells (2, 1)
  >>> print(int(min_num_selected(split, g, 1)), int(min_num_selected(split, g, 2)))
  2 3
  """
  k_true = true_params.gate_bias.shape[-1]
  if (
    isinstance(true_num_selected, bool)
    or not isinstance(true_num_selected, int)
    or not (1 <= true_num_selected <= k_true)
  ):
    raise ValueError(f"`true_num_selected` must be a Python int in [1, {k_true}], got {true_num_selected!r}.")
  size = jnp.sum(jax.nn.one_hot(voronoi_cells(params, true_params), k_true, dtype=jnp.int32), axis=0)
  return jnp.sum(jax.lax.top_k(size, true_num_selected)[0])
