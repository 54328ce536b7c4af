"""Post-training weight quantization as studied by ZeroQuant-V2: round-to-nearest, GPTQ and low-rank compensation.

Yao, Wu, Li, Youn, He. "ZeroQuant-V2: Exploring Post-training Quantization in LLMs from Comprehensive Study to
Low Rank Compensation", AAAI 2024, arXiv 2303.08302. GPTQ: Frantar, Ashkboos, Hoefler, Alistarh. "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023, arXiv 2210.17323.

A linear layer computes ``y = x @ wᵀ`` with ``w`` of shape (out, in) (a flax ``nn.Dense`` kernel is ``wᵀ``). Weights
are quantized in groups of ``group_size`` consecutive input channels of one output row (``None``: the whole row,
"per-row"); each group has a float scale ``s`` and an integer zero point ``z``:

  symmetric:  s = max|g| / (2^{b−1} − 1),  z = 0,  codes in [−2^{b−1}, 2^{b−1} − 1];
  asymmetric: s = (max g − min g) / (2^b − 1),  z = round(−min g / s),  codes in [0, 2^b − 1],

with ŵ = s · (clamp(round(w / s) + z) − z). For the asymmetric grid the range is widened to contain 0, as in the GPTQ
reference code: then z ∈ [0, 2^b − 1] fits in b bits, 0 is exactly representable and |w − ŵ| ≤ s/2 still holds.

* :func:`rtn` is round-to-nearest, the baseline of ZeroQuant-V2's study ("RTN").
* :func:`gptq` is GPTQ (arXiv 2210.17323, Algorithm 1): it quantizes the columns of ``w`` one at a time and moves
  each column's error onto the columns not yet quantized, weighted by the upper Cholesky factor of the inverse
  Hessian of the layer's output error, H = 2XᵀX/n.
* :func:`lorc` is ZeroQuant-V2's low-rank compensation (LoRC, its proposed method): the rank-m truncated SVD of the
  quantization error E = W − Ŵ, split as Û = U_m Σ_m^½, V̂ = Σ_m^½ V_mᵀ, optionally with quantized factors.
* :func:`quantize_dense_layers`, :func:`dense_input_hessians` and :func:`quantize_model` apply a weight quantizer,
  passed as ``algorithm=`` (:class:`RTNQuantizer`, :class:`GPTQQuantizer` or any function of their signature), to
  every ``nn.Dense`` layer of a flax model, with GPTQ calibrated layer by layer (sequentially, on the inputs
  produced by the already-quantized layers before it) and a size report.

One deliberate difference from the GPTQ reference code: with groups, the reference computes a group's parameters
from columns that have not yet received the updates of the current lazy block. Here the block size is rounded up
to a multiple of ``group_size`` and the parameters are taken from the fully updated columns, so the result equals
the column-by-column algorithm without lazy batching (and does not depend on ``block_size``).

>>> w = jax.random.normal(jax.random.key(0), (8, 64))
>>> x = jax.random.normal(jax.random.key(1), (256, 64))
>>> layer_error = lambda w_hat: float(jnp.linalg.norm(x @ (w - w_hat).T))
>>> layer_error(gptq(w, x, bits=3, group_size=32)) < layer_error(rtn(w, bits=3, group_size=32))
True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
from flax import struct

from toolkit import _checks
from toolkit.kernels import dispatch

SUPPORTED_BITS = tuple(range(2, 9))
# Bits of one stored scale: fp16, as in the paper's fp16 models.
SCALE_BITS = 16


class QuantParams(NamedTuple):
  """Per-group quantization grid of a weight (out, in).

  Attributes:
    scale: (out, in // group_size) step s of each group (positive; 1 for an all-zero group).
    zero: (out, in // group_size) integer zero point z (stored as float; 0 when symmetric).
  """

  scale: jax.Array
  zero: jax.Array


class LoRCFactors(NamedTuple):
  """Low-rank compensation Û (out, m) and V̂ (m, in), with ``w_hat + u @ v`` the compensated weight."""

  u: jax.Array
  v: jax.Array


class SizeReport(NamedTuple):
  """Storage of a model whose ``nn.Dense`` kernels were quantized (all sizes in bytes unless said otherwise).

  Attributes:
    quantized_params: weights stored at ``bits`` (the quantized kernels).
    other_params: parameters kept in floating point (embeddings, norms, biases, excluded layers).
    lorc_params: entries of all Û and V̂ factors.
    weight_bytes: the b-bit codes, ``bits · quantized_params / 8``.
    scale_bytes: the group scales (fp16) and, when asymmetric, the b-bit zero points.
    lorc_bytes: Û, V̂ at ``lorc_bits`` with their fp16 scales, or at fp16 when not quantized.
    other_bytes: ``other_params`` at fp16.
    fp32_bytes, fp16_bytes: the unquantized model at 32 and 16 bits.
  """

  quantized_params: int
  other_params: int
  lorc_params: int
  weight_bytes: float
  scale_bytes: float
  lorc_bytes: float
  other_bytes: float
  fp32_bytes: float
  fp16_bytes: float

  @property
  def total_bytes(self) -> float:
    return self.weight_bytes + self.scale_bytes + self.lorc_bytes + self.other_bytes

  @property
  def lorc_fraction(self) -> float:
    """LoRC's extra parameters relative to the quantized weights (the paper's "extra parameters")."""
    return self.lorc_params / max(self.quantized_params, 1)


class QuantizedModel(NamedTuple):
  """Output of :func:`quantize_dense_layers` and :func:`quantize_model`.

  Attributes:
    params: the model's params with every quantized ``nn.Dense`` kernel replaced by (Ŵ + ÛV̂)ᵀ (dequantized;
      Ŵᵀ without LoRC), ready for the unchanged ``apply``.
    factors: LoRC factors of each layer (path → :class:`LoRCFactors`); empty without LoRC.
    size: the :class:`SizeReport`.
    layers: the paths of the quantized layers, in the order they were quantized.
  """

  params: Any
  factors: dict[tuple[str, ...], LoRCFactors]
  size: SizeReport
  layers: tuple[tuple[str, ...], ...]


# ------------------------------------------------------------------------------------------------------------------
# Input checks (trace time).


def _check_bits(bits) -> int:
  return dispatch.check_bits(bits, SUPPORTED_BITS)


def _check_weight(w, name: str = "w") -> jax.Array:
  w = jnp.asarray(w)
  if w.ndim != 2:
    raise ValueError(f"`{name}` must be a 2-D weight of shape (out, in), got shape {w.shape}.")
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating array, got dtype {w.dtype}.")
  return w


def _check_group_size(group_size, columns: int) -> int:
  """The group length along the input channels; ``None`` means the whole row."""
  if group_size is None:
    return columns
  if (
    isinstance(group_size, bool)
    or not isinstance(group_size, (int, np.integer))
    or group_size < 1
    or columns % group_size
  ):
    raise ValueError(
      f"`group_size` must be None or a positive integer dividing the input dimension of `w` "
      f"({columns}), got {group_size!r}."
    )
  return int(group_size)


def _compute_dtype(*arrays) -> jnp.dtype:
  # float32 at least (half-precision weights are quantized in float32); float64 stays float64 under x64.
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


# ------------------------------------------------------------------------------------------------------------------
# Round to nearest.


def _grid(bits: int, symmetric: bool) -> tuple[int, int]:
  """The integer code range [lo, hi]."""
  if symmetric:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
  return 0, (1 << bits) - 1


def _group_params(g: jax.Array, bits: int, symmetric: bool) -> tuple[jax.Array, jax.Array]:
  """Scale and zero point of the groups in the last axis of ``g`` (the grids of the module docstring)."""
  if symmetric:
    scale = jnp.max(jnp.abs(g), axis=-1) / ((1 << (bits - 1)) - 1)
    zero = jnp.zeros_like(scale)
  else:
    # Widening the range to contain 0 keeps the integer zero point inside the b-bit code range.
    lo = jnp.minimum(jnp.min(g, axis=-1), 0)
    hi = jnp.maximum(jnp.max(g, axis=-1), 0)
    scale = (hi - lo) / ((1 << bits) - 1)
    zero = None
  # An all-zero group has range 0: any positive step maps it to code z and back to exactly 0. A group holding NaN
  # keeps a NaN step: XLA:CPU's max may drop the NaN (CONTRIBUTING.md), and a step of 1 would round the group's
  # other entries to finite wrong values.
  scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
  scale = jnp.where(jnp.isnan(g).any(axis=-1), jnp.nan, scale)
  if zero is None:
    zero = jnp.round(-lo / scale)
  return scale, zero


def _fake_quant(w: jax.Array, scale: jax.Array, zero: jax.Array, bits: int, symmetric: bool) -> jax.Array:
  """ŵ = s (clamp(round(w / s) + z, lo, hi) − z), elementwise with broadcast scale and zero."""
  lo, hi = _grid(bits, symmetric)
  return scale * (jnp.clip(jnp.round(w / scale) + zero, lo, hi) - zero)


def rtn_params(w: jax.Array, *, bits: int, group_size: int | None = None, symmetric: bool = False) -> QuantParams:
  """The round-to-nearest grid of each group of ``w`` (the module docstring's formulas).

  Args:
    w: (out, in) weight.
    bits: 2..8.
    group_size: consecutive input channels per group (must divide ``in``); ``None`` for one group per row.
    symmetric: symmetric grid (z = 0) instead of the asymmetric one.

  Returns:
    :class:`QuantParams` with ``scale`` and ``zero`` of shape (out, in // group_size).
  """
  bits = _check_bits(bits)
  w = _check_weight(w)
  g = _check_group_size(group_size, w.shape[1])
  groups = w.astype(_compute_dtype(w)).reshape(w.shape[0], w.shape[1] // g, g)
  return QuantParams(*_group_params(groups, bits, bool(symmetric)))


def rtn(w: jax.Array, *, bits: int, group_size: int | None = None, symmetric: bool = False) -> jax.Array:
  """Round-to-nearest weight quantization, per row or per group of input channels (ZeroQuant-V2's "RTN").

  Each entry moves to the nearest point of its group's grid, so ``|w − ŵ| ≤ scale / 2``.

  Args:
    w: (out, in) weight of ``y = x @ wᵀ``.
    bits: 2..8 bits per weight.
    group_size: consecutive input channels sharing a scale (must divide ``in``); ``None``: one scale per row.
    symmetric: symmetric grid (z = 0, codes in [−2^{b−1}, 2^{b−1} − 1]) instead of the asymmetric one.

  Returns:
    The dequantized weight Ŵ, shape and dtype of ``w``.

  >>> w = jnp.array([[0.0, 0.3, 0.61, 1.5]])
  >>> rtn(w, bits=2)  # the grid 0, 0.5, 1, 1.5
  Array([[0. , 0.5, 0.5, 1.5]], dtype=float32)
  """
  w = _check_weight(w)
  params = rtn_params(w, bits=bits, group_size=group_size, symmetric=symmetric)
  out, columns = w.shape
  g = columns // params.scale.shape[1]
  groups = w.astype(params.scale.dtype).reshape(out, columns // g, g)
  w_hat = _fake_quant(groups, params.scale[..., None], params.zero[..., None], bits, bool(symmetric))
  return w_hat.reshape(out, columns).astype(w.dtype)


# ------------------------------------------------------------------------------------------------------------------
# GPTQ.


def hessian(x: jax.Array) -> jax.Array:
  """H = 2XᵀX / n, the Hessian of the layer-wise loss ‖XWᵀ − XŴᵀ‖²/n in each row of W, from inputs ``x`` (..., in).

  GPTQ Sec. 3 writes it H = 2XXᵀ with X laid out (in, samples); the 1/n makes batches of any size comparable.
  """
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"`x` must have shape (samples, in) (or (..., in)), got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`x` must be a floating array, got dtype {x.dtype}.")
  if x.size == 0:  # 0 / 0 samples
    raise ValueError(f"`x` must hold at least one sample of at least one channel, got shape {x.shape}.")
  x = x.reshape(-1, x.shape[-1]).astype(_compute_dtype(x))
  return 2.0 * (x.T @ x) / x.shape[0]


def gptq(
  w: jax.Array,
  x: jax.Array,
  *,
  bits: int,
  group_size: int | None = None,
  damp: float = 0.01,
  block_size: int = 128,
  symmetric: bool = False,
) -> jax.Array:
  """GPTQ quantization of ``w`` calibrated on the layer inputs ``x`` (arXiv 2210.17323, Algorithm 1).

  Args:
    w: (out, in) weight of ``y = x @ wᵀ``.
    x: (samples, in) calibration inputs of the layer (leading axes are flattened: (..., in) works too).
    bits, group_size, symmetric: the grid, as in :func:`rtn`.
    damp: relative damping, λ = damp · mean(diag H) (GPTQ Sec. 4, "Cholesky reformulation").
    block_size: columns per lazy batch (Sec. 4, "lazy batch-updates"); speed only, the result does not depend on
      it. Rounded up to a multiple of ``group_size``.

  Returns:
    The dequantized weight Ŵ, shape and dtype of ``w``.
  """
  w = _check_weight(w)
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[-1] != w.shape[1]:
    raise ValueError(
      f"`x` must have shape (samples, in) with in = {w.shape[1]} (the input dimension of `w`), got shape {x.shape}."
    )
  return gptq_from_hessian(
    w,
    hessian(x),
    bits=bits,
    group_size=group_size,
    damp=damp,
    block_size=block_size,
    symmetric=symmetric,
  )


def gptq_from_hessian(
  w: jax.Array,
  h: jax.Array,
  *,
  bits: int,
  group_size: int | None = None,
  damp: float = 0.01,
  block_size: int = 128,
  symmetric: bool = False,
) -> jax.Array:
  """GPTQ from a precomputed Hessian ``h = 2XᵀX/n`` (in, in), e.g. accumulated over calibration batches.

  Steps (arXiv 2210.17323, Algorithm 1 and Sec. 4): dead inputs (H_jj = 0) get H_jj = 1 and a zero weight column;
  H += λI with λ = damp · mean(diag H); U = upper Cholesky factor of H⁻¹; then for each column j in order,
  q_j = quant(w_j), e_j = (w_j − q_j) / U_jj and every later column k gets w_k −= e_j U_jk, applied within a block
  of ``block_size`` columns at once and to the columns after the block in one matrix product (lazy batches).
  Group parameters are computed from the (updated) group columns when the first column of a group is reached.
  See :func:`gptq` for the arguments. With ``damp=0`` and rank-deficient inputs H is singular: the Cholesky factor,
  and so the result, is NaN (a run-time value, not checked).
  """
  bits = _check_bits(bits)
  w = _check_weight(w)
  h = jnp.asarray(h)
  out, columns = w.shape
  if h.shape != (columns, columns):
    raise ValueError(
      f"`h` must be the ({columns}, {columns}) input Hessian of `w` (out, in) = {w.shape}, got shape {h.shape}."
    )
  g = _check_group_size(group_size, columns)
  if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
    raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
  if isinstance(damp, (int, float)) and not damp >= 0:
    raise ValueError(f"`damp` must be >= 0, got {damp!r}.")
  symmetric = bool(symmetric)
  dtype = _compute_dtype(w, h)
  w32, h = w.astype(dtype), h.astype(dtype)

  # Per-row grids come from the original weight, before dead columns are zeroed (as in the reference code).
  row_scale, row_zero = _group_params(w32, bits, symmetric) if group_size is None else (None, None)

  diag = jnp.diagonal(h)
  dead = diag == 0
  h = h + jnp.diag(jnp.where(dead, 1.0, 0.0).astype(dtype))
  w32 = jnp.where(dead[None, :], 0.0, w32)
  h = h + damp * jnp.mean(jnp.diagonal(h)) * jnp.eye(columns, dtype=dtype)
  h_inv = jsp.linalg.cho_solve((jnp.linalg.cholesky(h), True), jnp.eye(columns, dtype=dtype))
  u = jnp.linalg.cholesky(h_inv, upper=True)

  # Groups never straddle a block, so a group's parameters see all the updates of the columns before it.
  per_group = group_size is not None
  block = min(block_size, columns)
  if per_group:
    block = g * math.ceil(block / g)
  n_blocks = math.ceil(columns / block)
  padded = n_blocks * block
  if padded > columns:
    # Zero columns with an identity Hessian block quantize to 0 with no error, and U stays block diagonal.
    w32 = jnp.pad(w32, ((0, 0), (0, padded - columns)))
    u = jsp.linalg.block_diag(u, jnp.eye(padded - columns, dtype=dtype))

  def block_step(b, carry):
    w_cur, q = carry
    i1 = b * block
    w1 = jax.lax.dynamic_slice_in_dim(w_cur, i1, block, axis=1)
    u_rows = jax.lax.dynamic_slice_in_dim(u, i1, block, axis=0)  # (block, padded)
    u_blk = jax.lax.dynamic_slice_in_dim(u_rows, i1, block, axis=1)  # (block, block), upper triangular

    def column_step(j, inner):
      w1, q1, err1, scale, zero = inner
      if per_group:
        scale, zero = jax.lax.cond(
          j % g == 0,
          lambda: _group_params(jax.lax.dynamic_slice_in_dim(w1, j, g, axis=1).reshape(out, 1, g), bits, symmetric),
          lambda: (scale, zero),
        )
      col = jax.lax.dynamic_index_in_dim(w1, j, axis=1, keepdims=False)
      qc = _fake_quant(col, scale[:, 0], zero[:, 0], bits, symmetric)
      err = (col - qc) / u_blk[j, j]
      # U is upper triangular: row j touches only columns >= j of the block, so no mask is needed.
      w1 = w1 - err[:, None] * u_blk[j][None, :]
      q1 = jax.lax.dynamic_update_index_in_dim(q1, qc, j, axis=1)
      err1 = jax.lax.dynamic_update_index_in_dim(err1, err, j, axis=1)
      return w1, q1, err1, scale, zero

    if per_group:
      scale0 = zero0 = jnp.zeros((out, 1), dtype)
    else:
      scale0, zero0 = row_scale[:, None], row_zero[:, None]
    zeros = jnp.zeros_like(w1)
    _, q1, err1, _, _ = jax.lax.fori_loop(0, block, column_step, (w1, zeros, zeros, scale0, zero0))
    q = jax.lax.dynamic_update_slice_in_dim(q, q1, i1, axis=1)
    # Propagate the block's errors to all later columns at once. Columns before the block get nothing (U is upper
    # triangular); the block's own columns get stale values but are never read again.
    w_cur = w_cur - err1 @ u_rows
    return w_cur, q

  _, q = jax.lax.fori_loop(0, n_blocks, block_step, (w32, jnp.zeros_like(w32)))
  return q[:, :columns].astype(w.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Low-rank compensation.


def lorc(w: jax.Array, w_hat: jax.Array, *, rank: int, factor_bits: int | None = None) -> LoRCFactors:
  """Low-rank compensation of the quantization error E = W − Ŵ (ZeroQuant-V2, LoRC).

  With the SVD E = U Σ Vᵀ, returns Û = U_m Σ_m^½ and V̂ = Σ_m^½ V_mᵀ, the best rank-m approximation of E in
  Frobenius norm (Eckart–Young: ‖E − ÛV̂‖_F² = Σ_{i>m} σ_i²), split evenly so both factors have the same range.
  A zero singular value (rank(E) < m) gives zero columns of Û and rows of V̂.

  Args:
    w: (out, in) original weight.
    w_hat: (out, in) its quantized (dequantized) version.
    rank: m, 1 <= m <= min(out, in) (the paper's default is 8).
    factor_bits: if given (2..8), Û and V̂ are themselves quantized with symmetric RTN: Û with one scale per column
      (each of the m columns of length ``out``), V̂ with one scale per row (ZeroQuant-V2 notes that the factors
      can themselves be low-precision).

  Returns:
    :class:`LoRCFactors` ``(u, v)`` with ``u`` (out, m), ``v`` (m, in); compensated weight ``w_hat + u @ v``.
  """
  w = _check_weight(w)
  w_hat = _check_weight(w_hat, "w_hat")
  if w_hat.shape != w.shape:
    raise ValueError(f"`w_hat` must have the shape of `w` {w.shape}, got {w_hat.shape}.")
  if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= min(w.shape):
    raise ValueError(f"`rank` must be an integer in [1, {min(w.shape)}] for `w` of shape {w.shape}, got {rank!r}.")
  if factor_bits is not None:
    _check_bits(factor_bits)
  dtype = _compute_dtype(w, w_hat)
  err = w.astype(dtype) - w_hat.astype(dtype)
  # The top-m singular pairs from the eigendecomposition of the smaller Gram matrix (XLA's CPU SVD is ~50x slower
  # than its eigh). The other side is the projection of E itself, so ÛV̂ is exactly E projected on the m leading
  # singular directions, whatever rounding the Gram matrix adds to the directions.
  tall = err.shape[0] >= err.shape[1]
  gram = err.T @ err if tall else err @ err.T
  eigvals, eigvecs = jnp.linalg.eigh(gram)
  basis = eigvecs[:, ::-1][:, :rank]  # eigh sorts ascending
  sigma = jnp.sqrt(jnp.maximum(eigvals[::-1][:rank], 0.0))
  root = jnp.sqrt(sigma)
  inv_root = jnp.where(sigma > 0, 1.0 / jnp.where(sigma > 0, root, 1.0), 0.0)
  if tall:  # basis = V_m: Û = E V_m Σ^{-½}, V̂ = Σ^½ V_mᵀ
    u, v = (err @ basis) * inv_root[None, :], root[:, None] * basis.T
  else:  # basis = U_m: Û = U_m Σ^½, V̂ = Σ^{-½} U_mᵀ E
    u, v = basis * root[None, :], inv_root[:, None] * (basis.T @ err)
  if factor_bits is not None:
    u = rtn(u.T, bits=factor_bits, symmetric=True).T
    v = rtn(v, bits=factor_bits, symmetric=True)
  return LoRCFactors(u.astype(w.dtype), v.astype(w.dtype))


# ------------------------------------------------------------------------------------------------------------------
# Activations.


def quantize_activations(x: jax.Array, *, bits: int) -> jax.Array:
  """Token-wise symmetric fake quantization of activations (the "A8" of ZeroQuant-V2's W4A8 and W8A8).

  Each token (a vector along the last axis) gets its own scale s = max|x| / (2^{b−1} − 1), computed at run time
  (dynamic), and ``x̂ = s · clamp(round(x / s), −2^{b−1}, 2^{b−1} − 1)``: the token-wise scheme of ZeroQuant
  (Yao et al. 2022, arXiv 2206.01861, Sec. 4.1) that ZeroQuant-V2's activation study uses. One outlier channel
  widens the whole token's step: the reason ZeroQuant-V2 gives for activations being the more sensitive side.

  Args:
    x: (..., channels) floating activations.
    bits: 2..8.

  Returns:
    x̂, the shape and dtype of ``x``; ``|x − x̂| ≤ s / 2``. A NaN in a token stays NaN in that token.

  >>> quantize_activations(jnp.array([[0.0, 0.26, -1.0, 0.5]]), bits=3)  # step 1/3 in this token
  Array([[ 0.        ,  0.33333334, -1.        ,  0.6666667 ]], dtype=float32)
  """
  bits = _check_bits(bits)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`x` must be a floating array, got dtype {x.dtype}.")
  if x.ndim < 1:
    raise ValueError(f"`x` must have a channel axis (the last), got a scalar of shape {x.shape}.")
  dtype = _compute_dtype(x)
  xf = x.astype(dtype)
  scale, zero = _group_params(xf, bits, symmetric=True)
  # XLA:CPU's max drops NaN (CONTRIBUTING.md): the token's NaN is put back explicitly.
  x_hat = _fake_quant(xf, scale[..., None], zero[..., None], bits, symmetric=True)
  x_hat = jnp.where(jnp.isnan(xf).any(-1, keepdims=True), jnp.nan, x_hat)
  return x_hat.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class DenseInputQuantizer:
  """A flax method interceptor that quantizes the input of every ``nn.Dense`` call (:func:`quantize_activations`).

  ``with nn.intercept_methods(DenseInputQuantizer(8)): model.apply(params, x)`` runs the model with 8-bit
  token-wise activations into each linear layer (WxA8 when the weights are quantized too), the way a W·A8
  integer kernel would see them. Frozen, so equal settings hash equal: it can be a static argument of ``jit``.

  Attributes:
    bits: 2..8.
    exclude: names of ``nn.Dense`` modules whose inputs stay in floating point (e.g. ``("lm_head",)``).
  """

  bits: int
  exclude: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "bits", _check_bits(self.bits))
    if isinstance(self.exclude, str):
      raise TypeError(f"`exclude` must be a sequence of layer names, not the string {self.exclude!r}.")
    object.__setattr__(self, "exclude", tuple(self.exclude))

  def __call__(self, next_fun, args, kwargs, context):
    import flax.linen as nn

    if (
      isinstance(context.module, nn.Dense)
      and context.method_name == "__call__"
      and context.module.name not in self.exclude
    ):
      if args:
        args = (quantize_activations(args[0], bits=self.bits),) + tuple(args[1:])
      else:
        kwargs = {**kwargs, "inputs": quantize_activations(kwargs["inputs"], bits=self.bits)}
    return next_fun(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Whole models: every nn.Dense layer of a flax model.

Path = tuple[str, ...]


def _is_kernel_holder(node) -> bool:
  return isinstance(node, Mapping) and "kernel" in node and getattr(node["kernel"], "ndim", None) == 2


def dense_kernels(params) -> dict[Path, jax.Array]:
  """Every 2-D ``kernel`` of a (nested dict) flax params tree, i.e. every ``nn.Dense``: path → kernel (in, out).

  The path is the key sequence under the top-level ``"params"`` collection (if present), as in ``Module.path``.
  """
  if not isinstance(params, Mapping):  # anything else would hold no kernel, and quantize nothing
    raise TypeError(f"`params` must be a flax params dict (a Mapping), got {type(params).__name__}.")
  root = params.get("params", params)
  found: dict[Path, jax.Array] = {}

  def walk(node, path):
    if _is_kernel_holder(node):
      found[path] = node["kernel"]
    if isinstance(node, Mapping):
      for k, v in node.items():
        if k != "kernel":
          walk(v, path + (str(k),))

  walk(root, ())
  return found


def _replace_kernels(params, kernels: Mapping[Path, jax.Array]):
  has_root = isinstance(params, Mapping) and "params" in params

  def rebuild(node, path):
    if isinstance(node, Mapping):
      new = {k: rebuild(v, path + (str(k),)) for k, v in node.items() if k != "kernel"}
      if "kernel" in node:
        new["kernel"] = kernels.get(path, node["kernel"])
      # Keep the insertion order of the original dict.
      return {k: new[k] for k in node}
    return node

  if has_root:
    return {**params, "params": rebuild(params["params"], ())}
  return rebuild(params, ())


@functools.lru_cache(maxsize=64)
def _input_moments(apply_fn: Callable, wanted: tuple[Path, ...] | None = None) -> Callable:
  """A jitted ``(params, batch) -> {"i:a/b/c": (XᵀX, n)}`` over the inputs of the ``nn.Dense`` calls in ``wanted``
  (``None``: all).

  ``i`` is the layer's rank in call order, kept in the key because jit returns dicts with sorted keys. The model's
  output is discarded, so XLA drops every computation after the last wanted layer: a sequential calibration pass
  for an early layer costs only the forward pass up to it. Memoised on ``(apply_fn, wanted)`` (a compilation
  cache, as jit's own: the jitted function is pure), so repeated quantizations of one model compile once.
  """
  import flax.linen as nn

  def moments(p, batch):
    recorded: dict[Path, list] = {}

    def interceptor(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
        path = tuple(context.module.path)
        if wanted is None or path in wanted:
          x = args[0] if args else kwargs["inputs"]
          recorded.setdefault(path, []).append(x.reshape(-1, x.shape[-1]).astype(jnp.float32))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      apply_fn(p, batch)
    out = {}
    for i, (path, xs) in enumerate(recorded.items()):
      x = jnp.concatenate(xs, axis=0)
      out[f"{i:05d}:" + "/".join(path)] = (x.T @ x, jnp.asarray(x.shape[0], jnp.float32))
    return out

  return jax.jit(moments)


def _moments_fn(apply_fn: Callable, wanted: tuple[Path, ...] | None) -> Callable:
  try:
    return _input_moments(apply_fn, wanted)
  except TypeError:  # an unhashable apply_fn: no memoisation
    return _input_moments.__wrapped__(apply_fn, wanted)


def _accumulate(moments: Callable, params, batches: Iterable[Any]) -> dict[Path, jax.Array]:
  totals: dict[str, list] = {}
  for batch in batches:
    for name, (xtx, n) in sorted(moments(params, batch).items()):
      if name in totals:
        totals[name][0] = totals[name][0] + xtx
        totals[name][1] = totals[name][1] + n
      else:
        totals[name] = [xtx, n]
  if not totals:
    raise ValueError("`apply_fn` called no nn.Dense layer (or `batches` was empty): nothing to calibrate.")
  return {tuple(name.split(":", 1)[1].split("/")): 2.0 * xtx / n for name, (xtx, n) in sorted(totals.items())}


def dense_input_hessians(apply_fn: Callable, params, batches: Iterable[Any]) -> dict[Path, jax.Array]:
  """H = 2XᵀX/n of the inputs of every ``nn.Dense`` call of ``apply_fn(params, batch)`` over all ``batches``.

  The inputs are recorded with ``flax.linen.intercept_methods`` (every ``nn.Dense.__call__``) inside one jitted
  function that returns only the (in, in) sums; a layer called several times accumulates all its calls, and the
  batches are pooled by sample count, as the running mean of the GPTQ reference code does.

  Args:
    apply_fn: ``(params, batch) -> anything``, e.g. ``lambda p, t: model.apply(p, t)``.
    params: the params to run with (full-precision, or partly quantized for sequential calibration).
    batches: an iterable of model inputs.

  Returns:
    path (``Module.path``, as in :func:`dense_kernels`) → Hessian (in, in), float32.
  """
  _check_apply_fn(apply_fn)
  return _accumulate(_moments_fn(apply_fn, None), params, batches)


class RTNQuantizer(struct.PyTreeNode):
  """Round to nearest as a weight quantizer for :func:`quantize_model` (``algorithm=RTNQuantizer()``): data-free.

  A weight quantizer is called ``algorithm(w, h, *, bits, group_size, symmetric) -> w_hat`` with w (out, in), h
  the (in, in) input Hessian of the layer (``None`` when ``uses_hessian`` is False) and the grid of :func:`rtn`.
  """

  uses_hessian: ClassVar[bool] = False

  def __call__(
    self, w: jax.Array, h: jax.Array | None, *, bits: int, group_size: int | None, symmetric: bool
  ) -> jax.Array:
    del h
    return rtn(w, bits=bits, group_size=group_size, symmetric=symmetric)


class GPTQQuantizer(struct.PyTreeNode):
  """GPTQ as a weight quantizer for :func:`quantize_model` (``algorithm=GPTQQuantizer(damp=0.01)``), calibrated on
  each layer's input Hessian (:func:`gptq_from_hessian`).

  Attributes:
    damp: relative damping (traced: changing it does not recompile).
    block_size: columns per lazy batch (static).
  """

  damp: float = 0.01
  block_size: int = struct.field(pytree_node=False, default=128)
  uses_hessian: ClassVar[bool] = True

  def __call__(
    self, w: jax.Array, h: jax.Array | None, *, bits: int, group_size: int | None, symmetric: bool
  ) -> jax.Array:
    return gptq_from_hessian(
      w,
      h,
      bits=bits,
      group_size=group_size,
      damp=self.damp,
      block_size=self.block_size,
      symmetric=symmetric,
    )


def _check_apply_fn(apply_fn) -> None:
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be a function (params, batch) -> outputs, got {apply_fn!r}.")


def _check_algorithm(algorithm) -> Callable:
  if isinstance(algorithm, str) or not callable(algorithm):
    raise TypeError(
      f"`algorithm` must be a weight quantizer (w, h, *, bits, group_size, symmetric) -> w_hat, such "
      f"as zeroquant.RTNQuantizer() or zeroquant.GPTQQuantizer(), got {algorithm!r}."
    )
  return algorithm


def _uses_hessian(algorithm) -> bool:
  # A quantizer that does not say is given the Hessians: calibration costs time, never correctness.
  return bool(getattr(algorithm, "uses_hessian", True))


def _call_quantizer(algorithm, w, h, *, bits, group_size, symmetric):
  return algorithm(w, h, bits=bits, group_size=group_size, symmetric=symmetric)


# A quantizer that is a pytree with leaves (GPTQQuantizer's damp) is traced; any other (a plain function,
# RTNQuantizer) is a static argument, so it must be hashable.
_quantize_traced = jax.jit(_call_quantizer, static_argnames=("bits", "group_size", "symmetric"))
_quantize_static = jax.jit(_call_quantizer, static_argnames=("algorithm", "bits", "group_size", "symmetric"))
_lorc_jit = jax.jit(lorc, static_argnames=("rank", "factor_bits"))


def _quantize_kernel(kernel, h, *, algorithm, bits, group_size, symmetric, lorc_rank, lorc_bits):
  """(in, out) kernel → compensated (in, out) kernel and its LoRC factors (or None)."""
  w = kernel.T
  leaves = jax.tree.leaves(algorithm)
  if leaves and not (len(leaves) == 1 and leaves[0] is algorithm):
    w_hat = _quantize_traced(algorithm, w, h, bits=bits, group_size=group_size, symmetric=symmetric)
  else:
    w_hat = _quantize_static(w=w, h=h, algorithm=algorithm, bits=bits, group_size=group_size, symmetric=symmetric)
  factors = None
  if lorc_rank:
    factors = _lorc_jit(w, w_hat, rank=lorc_rank, factor_bits=lorc_bits)
    w_hat = w_hat + factors.u @ factors.v
  return w_hat.T.astype(kernel.dtype), factors


def _quantize_layers(kernels, layer_hessians: Mapping[Path, jax.Array | None], **options):
  """Quantizes the kernel of each layer of ``layer_hessians`` given its Hessian (``None`` when the quantizer needs
  none); returns the new kernels and the LoRC factors of the layers that have some."""
  new, factors = {}, {}
  for path, h in layer_hessians.items():
    new[path], f = _quantize_kernel(kernels[path], h, **options)
    if f is not None:
      factors[path] = f
  return new, factors


def size_report(
  params,
  layers: Sequence[Path],
  *,
  bits: int,
  group_size: int | None = None,
  symmetric: bool = False,
  lorc_rank: int | None = None,
  lorc_bits: int | None = None,
) -> SizeReport:
  """Bytes of a model whose ``layers`` (paths of ``nn.Dense`` kernels) are stored at ``bits``.

  Codes take ``bits`` each; every group adds an fp16 scale and, when asymmetric, a ``bits``-bit zero point. LoRC
  adds m(out + in) entries per layer, at fp16, or at ``lorc_bits`` with one fp16 scale per column of Û and per row
  of V̂. Everything else (embeddings, norms, biases, unquantized layers) counts at fp16.
  """
  bits = _check_bits(bits)
  if lorc_rank is not None:
    _checks.check_int(lorc_rank, "lorc_rank", minimum=0)  # 0: no LoRC, as None
  if lorc_bits is not None:
    dispatch.check_bits(lorc_bits, SUPPORTED_BITS, "lorc_bits")
  kernels = dense_kernels(params)
  total = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
  quantized = weight_bits = scale_bits = lorc_params = lorc_bits_total = 0
  for path in layers:
    if path not in kernels:
      raise ValueError(f"`layers` names {path}, which is no nn.Dense kernel of `params`.")
    d_in, d_out = kernels[path].shape
    g = _check_group_size(group_size, d_in)
    groups = d_out * (d_in // g)
    quantized += d_in * d_out
    weight_bits += bits * d_in * d_out
    scale_bits += groups * (SCALE_BITS + (0 if symmetric else bits))
    if lorc_rank:
      entries = lorc_rank * (d_in + d_out)
      lorc_params += entries
      lorc_bits_total += entries * SCALE_BITS if lorc_bits is None else entries * lorc_bits + 2 * lorc_rank * SCALE_BITS
  other = total - quantized
  return SizeReport(
    quantized_params=quantized,
    other_params=other,
    lorc_params=lorc_params,
    weight_bytes=weight_bits / 8,
    scale_bytes=scale_bits / 8,
    lorc_bytes=lorc_bits_total / 8,
    other_bytes=2.0 * other,
    fp32_bytes=4.0 * total,
    fp16_bytes=2.0 * total,
  )


def _check_layers(kernels, exclude):
  if isinstance(exclude, str) or not all(isinstance(name, str) for name in exclude):
    # A bare string is a sequence of characters, none of which names a layer: it used to exclude nothing.
    raise TypeError(f"`exclude` must be a sequence of layer names such as ('lm_head',), got {exclude!r}.")
  layers = tuple(p for p in kernels if not any(name in p for name in exclude))
  if not layers:
    raise ValueError(f"no nn.Dense kernel left to quantize (found {list(kernels)}, exclude={tuple(exclude)}).")
  return layers


def quantize_dense_layers(
  params,
  *,
  algorithm: Callable,
  bits: int,
  group_size: int | None = None,
  symmetric: bool = False,
  hessians: Mapping[Path, jax.Array] | None = None,
  lorc_rank: int | None = None,
  lorc_bits: int | None = None,
  exclude: Sequence[str] = (),
) -> QuantizedModel:
  """Quantizes every ``nn.Dense`` kernel of ``params`` at once (all GPTQ Hessians given up front).

  This is the one-shot variant: with GPTQ, ``hessians`` usually come from the full-precision model
  (:func:`dense_input_hessians`); :func:`quantize_model` calibrates sequentially instead.

  Args:
    params: flax params (``{"params": ...}`` or the inner dict).
    algorithm: the weight quantizer, :class:`RTNQuantizer`, :class:`GPTQQuantizer` or any function
      ``(w, h, *, bits, group_size, symmetric) -> w_hat`` (a pytree's leaves are traced, anything else must be
      hashable: it is a static argument of ``jax.jit``).
    bits, group_size, symmetric: the grid (:func:`rtn`); ``group_size`` must divide every layer's input dimension.
    hessians: path → (in, in) Hessian of each layer's inputs; required when ``algorithm.uses_hessian`` (True when
      the quantizer does not say).
    lorc_rank: LoRC rank m per layer (``None`` or 0: no LoRC); the factors are folded into the kernel.
    lorc_bits: bits of the LoRC factors (``None``: kept in float, counted at fp16).
    exclude: layers whose path contains any of these names stay in floating point (e.g. ``("lm_head",)``).

  Returns:
    A :class:`QuantizedModel`.

  >>> params = {"params": {"dense": {"kernel": jax.random.normal(jax.random.key(0), (64, 16))}}}
  >>> out = quantize_dense_layers(params, algorithm=RTNQuantizer(), bits=4, group_size=32)
  >>> out.layers, out.size.weight_bytes
  ((('dense',),), 512.0)
  """
  algorithm = _check_algorithm(algorithm)
  bits = _check_bits(bits)
  kernels = dense_kernels(params)
  layers = _check_layers(kernels, exclude)
  uses_hessian = _uses_hessian(algorithm)
  if uses_hessian:
    missing = [p for p in layers if hessians is None or p not in hessians]
    if missing:
      raise ValueError(f"{algorithm!r} needs `hessians` for every quantized layer; missing {missing}.")
  new, factors = _quantize_layers(
    kernels,
    {path: hessians[path] if uses_hessian else None for path in layers},
    algorithm=algorithm,
    bits=bits,
    group_size=group_size,
    symmetric=symmetric,
    lorc_rank=lorc_rank,
    lorc_bits=lorc_bits,
  )
  size = size_report(
    params,
    layers,
    bits=bits,
    group_size=group_size,
    symmetric=symmetric,
    lorc_rank=lorc_rank,
    lorc_bits=lorc_bits,
  )
  return QuantizedModel(_replace_kernels(params, new), factors, size, layers)


def quantize_model(
  apply_fn: Callable,
  params,
  calibration: Sequence[Any] | None = None,
  *,
  algorithm: Callable,
  bits: int,
  group_size: int | None = None,
  symmetric: bool = False,
  lorc_rank: int | None = None,
  lorc_bits: int | None = None,
  exclude: Sequence[str] = (),
  sequential: bool = True,
) -> QuantizedModel:
  """Quantizes every ``nn.Dense`` layer of a flax model, with GPTQ calibrated layer by layer.

  With a quantizer that uses the Hessian (GPTQ) and ``sequential=True``, layers are taken in the order the model
  calls them, and each layer's Hessian is measured on the inputs produced by the model whose earlier layers are
  already quantized (and LoRC-compensated), so later layers correct for the errors of earlier ones (the GPTQ
  reference's ``--true-sequential`` order). Layers fed the same input (q/k/v projections) share one measurement.
  ``sequential=False`` calibrates every layer on the full-precision model's activations (one pass). A data-free
  quantizer (RTN) ignores ``calibration``. The calibration functions are compiled once per ``apply_fn`` object and
  reused by later calls.

  Args:
    apply_fn: ``(params, batch) -> outputs``.
    params: full-precision params.
    calibration: a sequence of model inputs (batches), for a quantizer that uses the Hessian.
    algorithm: the weight quantizer (see :func:`quantize_dense_layers`).
    sequential: see above.
    Others: as in :func:`quantize_dense_layers`.

  Returns:
    A :class:`QuantizedModel` (``layers`` in calibration order).

  >>> import flax.linen as nn
  >>> model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(8)])
  >>> x = jax.random.normal(jax.random.key(0), (64, 32))
  >>> params = model.init(jax.random.key(1), x)
  >>> out = quantize_model(model.apply, params, [x], algorithm=GPTQQuantizer(block_size=16), bits=4)
  >>> out.layers
  (('layers_0',), ('layers_2',))
  """
  algorithm = _check_algorithm(algorithm)
  if not _uses_hessian(algorithm):
    return quantize_dense_layers(
      params,
      algorithm=algorithm,
      bits=bits,
      group_size=group_size,
      symmetric=symmetric,
      lorc_rank=lorc_rank,
      lorc_bits=lorc_bits,
      exclude=exclude,
    )
  bits = _check_bits(bits)
  _check_apply_fn(apply_fn)
  if not calibration:
    raise ValueError(f"{algorithm!r} needs `calibration`, a non-empty sequence of model inputs.")
  kernels = dense_kernels(params)
  hessians = _accumulate(_moments_fn(apply_fn, None), params, calibration)
  order = [p for p in hessians if p in kernels]  # call order of the model
  layers = _check_layers({p: kernels[p] for p in order}, exclude)
  if not sequential:
    return quantize_dense_layers(
      params,
      algorithm=algorithm,
      bits=bits,
      group_size=group_size,
      symmetric=symmetric,
      hessians=hessians,
      lorc_rank=lorc_rank,
      lorc_bits=lorc_bits,
      exclude=exclude,
    )
  # Layers fed the same tensor (q/k/v projections) have bitwise-equal Hessians: they form one stage, quantized
  # together on one measurement, as the GPTQ reference does.
  stages: list[list[Path]] = []
  for path in layers:
    stage = next(
      (
        st
        for st in stages
        if hessians[st[0]].shape == hessians[path].shape and bool(jnp.array_equal(hessians[st[0]], hessians[path]))
      ),
      None,
    )
    if stage is None:
      stages.append([path])
    else:
      stage.append(path)
  current, factors = params, {}
  for i, stage in enumerate(stages):
    if i:  # the first stage's inputs do not depend on any quantized layer
      h = _accumulate(_moments_fn(apply_fn, (stage[0],)), current, calibration)[stage[0]]
    else:
      h = hessians[stage[0]]
    new, stage_factors = _quantize_layers(
      kernels,
      dict.fromkeys(stage, h),
      algorithm=algorithm,
      bits=bits,
      group_size=group_size,
      symmetric=symmetric,
      lorc_rank=lorc_rank,
      lorc_bits=lorc_bits,
    )
    factors.update(stage_factors)
    current = _replace_kernels(current, new)
  size = size_report(
    params,
    layers,
    bits=bits,
    group_size=group_size,
    symmetric=symmetric,
    lorc_rank=lorc_rank,
    lorc_bits=lorc_bits,
  )
  return QuantizedModel(current, factors, size, layers)


__all__ = [
  "SUPPORTED_BITS",
  "DenseInputQuantizer",
  "GPTQQuantizer",
  "LoRCFactors",
  "QuantParams",
  "QuantizedModel",
  "RTNQuantizer",
  "SizeReport",
  "dense_input_hessians",
  "dense_kernels",
  "gptq",
  "gptq_from_hessian",
  "hessian",
  "lorc",
  "quantize_activations",
  "quantize_dense_layers",
  "quantize_model",
  "rtn",
  "rtn_params",
  "size_report",
]
