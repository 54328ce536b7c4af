"""T-MAC: mixed-precision GEMM/GEMV of float activations with 1–4-bit weights by table lookup.

Wei, Cao, Cao, Ma, Wang, Zhang, Yang. "T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on
Edge", EuroSys 2025, arXiv 2407.00088 (reference code: microsoft/T-MAC, ``python/t_mac/weights.py`` and the
``qgemm`` reference).

Weights are integer codes ``w ∈ [0, 2^b)`` with a scale and a zero point per row and group of ``group_size``
inputs, ``Ŵ[m, k] = s[m, γ(k)]·(w[m, k] − z[m, γ(k)])``. The paper's method, as implemented here:

* **Bit-serial decomposition.** ``w = Σ_{i<b} 2^i W_i`` with one-bit planes ``W_i ∈ {0, 1}^{M×K}``, so
  ``x·Ŵᵀ`` is a sum of b one-bit products: the cost grows linearly with b.
* **Tables.** K is cut into groups of g = 4 activations. For group j the table holds the 16 possible sums
  ``T_j[p] = Σ_{t<4} x[4j+t]·bit_t(p)``, and a one-bit row is 4 bits ``idx_i[m, j] = Σ_t W_i[m, 4j+t]·2^t``
  (little-endian), so ``Σ_{k∈j} x_k W_i[m, k] = T_j[idx_i[m, j]]``: K/4 lookups and adds per row and plane
  instead of K multiply-adds, and the tables (N·K/4·16 adds) are shared by all M rows.
* **±1 form and mirror consolidation.** With signs ``2·bit − 1`` the table ``T'_j[p] = Σ_t x_t (2 bit_t(p) − 1)
  = 2 T_j[p] − Σ_t x_t`` is antisymmetric, ``T'[15 − p] = −T'[p]``, so 8 entries (here the odd p, as in T-MAC's
  table constructor) determine it. Then ``w = Σ_i 2^{i−1} s'_i + (2^b − 1)/2`` and

      y[n, m] = Σ_γ s[m, γ] (Σ_i 2^{i−1} Σ_{j∈γ} T'_j[idx_i[m, j]]
                             + ((2^b − 1)/2 − z[m, γ]) Σ_{k∈γ} x[n, k]).

  The last sum is T-MAC's "LUT bias" (``−Σ_j T'_j[0]``), kept in float.
* **Table quantization (optional).** Each row n and weight group γ gets ``lut_scale = max |T'| / 127`` and int8
  tables ``round(T' / lut_scale)``; the lookups are summed in integers and rescaled once per group. Each lookup is
  off by at most ``lut_scale / 2``.

Weight preprocessing (``preprocess``) runs once: it splits the codes into bit-planes, forms the 4-bit indices and
packs 8 indices (of rows ``t·M'/8 + r``, t = 0…7, M' = M rounded up to a multiple of 8) into one int32 word, so
b-bit weights take exactly b bits each. ``matmul`` then picks an implementation:

* ``impl="xla"`` (the default on CPU) runs one of three XLA formulations, passed as ``algorithm=`` (any function
  ``(x, packed, *, int8_tables) -> y`` with x (N, K) float32 and y (N, M) float32 fits): :func:`lut_gather`
  gathers from the tables (the table lookup itself, blocked over rows so each block's lookups stay in cache; the
  fastest GEMV formulation measured on XLA:CPU, and its time grows linearly with b); :func:`bitserial_matmul` does
  b ±1 bit-plane matmuls instead (the same decomposition with the lookups replaced by matrix products, faster than
  gathers on XLA:CPU from about 16 activation rows on); :func:`onehot_lut` contracts one-hot indices with the
  tables (for comparison only: 4× the work of a matmul). ``algorithm=None`` takes :func:`lut_gather` for N ≤ 8
  rows or int8 tables, else :func:`bitserial_matmul`.
* ``impl="pallas"`` (the default on GPU/TPU; ``interpret=True`` on CPU): the table lookup written as dots, since
  Triton has no gather lowering. For each of the 8 stored (odd) entries p the kernel forms
  ``E_p = Σ_i 2^i ([idx_i = p] − [idx_i = 15 − p])`` and accumulates ``T'[p] @ E_pᵀ`` (with int8 tables, an
  int8×int8→int32 dot), which is the mirrored 8-entry lookup summed over bit-planes. The kernel targets Triton
  (GPU): the grid runs over (activation rows, weight rows) and the K loop is inside the kernel, block sizes are
  powers of two, and ``tl.dot`` needs ``group_size ≥ 64`` and at least 16 activation rows (x is padded to 16).
  Mosaic TPU's (8, 128) tiling rule is not met by these blocks; TPU is untested. On an H200 (jax 0.11.2) it
  lowered and matched dequantize-then-matmul to 7e-7 (relative, float tables), but it is not tuned: 5–25 ms per
  4096×4096 product against 0.1–0.2 ms for XLA's dequantize-then-matmul there.

On a CPU without T-MAC's register-resident tables and ``pshufb``/``tbl`` shuffles, XLA's gathers are far slower
than a float matmul: this module reproduces the algorithm, its exactness, its linear cost in bits and its weight
bytes, not the paper's speed-up over llama.cpp (see ``experiments/tmac.py``).

>>> codes = jax.random.randint(jax.random.key(0), (16, 64), 0, 4)  # 2-bit weights (M, K)
>>> scales, zeros = jnp.full((16, 2), 0.5), jnp.full((16, 2), 1.5)  # group_size 32
>>> packed = preprocess(codes, scales, zeros, bits=2, group_size=32)
>>> x = jax.random.normal(jax.random.key(1), (3, 64))
>>> y = matmul(x, packed)
>>> y.shape, bool(jnp.allclose(y, x @ dequantize(packed).T, atol=1e-4))
((3, 16), True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import pallas as pl

from toolkit.kernels import dispatch

SUPPORTED_BITS = (1, 2, 3, 4)
ACTIVATION_GROUP = 4  # g: activations per table, 2^g = 16 entries
TABLE_ENTRIES = 16
MIRRORED_ENTRIES = 8
ROWS_PER_WORD = 8  # 4-bit indices per int32 word
# algorithm=None: gathers up to this many activation rows, bit-plane matmuls above (the crossover measured on
# XLA:CPU at 4096×4096 lies between N = 8 and 16).
_LUT_MAX_ROWS = 8
# Full float32 contractions on every backend (GPUs would otherwise round the operands to tf32).
_HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class TMACWeights:
  """Preprocessed low-bit weights (a pytree; ``bits``, ``group_size`` and ``shape`` are static).

  Attributes:
    indices: int32 (bits, M'/8, K/4), M' = M rounded up to a multiple of 8. Word ``[i, r, j]`` holds, in bits
      4t…4t+3, the 4-bit index ``idx_i[t·M'/8 + r, j]`` of plane i, row ``t·M'/8 + r`` and activation group j.
    scales, zeros: (M, K / group_size) floats, as given.
    bits: 1…4.
    group_size: inputs per scale and zero point, a multiple of 4.
    shape: (M, K), the shape of the weight matrix.
  """

  indices: jax.Array
  scales: jax.Array
  zeros: jax.Array
  bits: int = struct.field(pytree_node=False)
  group_size: int = struct.field(pytree_node=False)
  shape: tuple[int, int] = struct.field(pytree_node=False)

  @property
  def nbytes(self) -> int:
    """Bytes of the packed indices, scales and zeros as stored."""
    return sum(int(a.size) * a.dtype.itemsize for a in (self.indices, self.scales, self.zeros))


# ------------------------------------------------------------------------------------------------------------
# Checks.


def _check_bits(bits) -> int:
  return dispatch.check_bits(bits, SUPPORTED_BITS)


def _check_group_size(group_size, k: int) -> int:
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
    raise ValueError(f"`group_size` must be a positive int, got {group_size!r}.")
  if group_size % ACTIVATION_GROUP:
    raise ValueError(
      f"`group_size` must be a multiple of {ACTIVATION_GROUP} (T-MAC's activation group g), got {group_size}."
    )
  if k % group_size:
    raise ValueError(f"K (the last axis of `codes`, {k}) must be a multiple of `group_size` ({group_size}).")
  return int(group_size)


def _check_activations(x, k: int | None = None, name: str = "x") -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"`{name}` must have shape (..., K), got a scalar.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating array, got dtype {x.dtype}.")
  if k is not None and x.shape[-1] != k:
    raise ValueError(f"the last axis of `{name}` ({x.shape[-1]}) must equal K = {k}, the weights' input size.")
  if x.shape[-1] % ACTIVATION_GROUP:
    raise ValueError(f"the last axis of `{name}` ({x.shape[-1]}) must be a multiple of {ACTIVATION_GROUP}.")
  return x


def _is_concrete(a) -> bool:
  return not isinstance(a, jax.core.Tracer)


def _check_packed(packed) -> TMACWeights:
  if not isinstance(packed, TMACWeights):
    raise TypeError(f"`packed` must be the TMACWeights of `preprocess`, got {type(packed).__name__}.")
  return packed


def _check_rows(x2, packed) -> None:
  """(N, K) float activations of an XLA formulation (``lut_gather``, ...), K the weights' input size; ``x2`` is
  checked, not converted (a NumPy ``x2`` keeps its NumPy group sums)."""
  _check_packed(packed)
  if jnp.ndim(x2) != 2:
    raise ValueError(f"`x2` must be a 2-D (N, K) array, got shape {jnp.shape(x2)}.")
  _check_activations(x2, packed.shape[1], "x2")


# ------------------------------------------------------------------------------------------------------------
# Weight preprocessing (run once).


def preprocess(codes: jax.Array, scales: jax.Array, zeros: jax.Array, *, bits: int, group_size: int) -> TMACWeights:
  """Bit-planes, 4-bit indices and packing of low-bit weights (T-MAC's offline weight transform).

  ``Ŵ[m, k] = scales[m, k // group_size]·(codes[m, k] − zeros[m, k // group_size])``. The codes are split into
  bit-planes (``w = Σ_i 2^i W_i``), each plane's 4 consecutive bits form an index ``Σ_t W_i[m, 4j+t]·2^t`` and 8
  indices of rows ``t·M'/8 + r`` share an int32 word (see :class:`TMACWeights`).

  Args:
    codes: (M, K) integers in [0, 2^bits). Checked when concrete; under ``jit`` the bits above ``bits`` are dropped.
    scales, zeros: (M, K / group_size) floats (zeros may be fractional, as GPTQ's or KIVI's float minimum).
    bits: 1, 2, 3 or 4 (static).
    group_size: a multiple of 4 that divides K (static).

  Returns:
    The :class:`TMACWeights` pytree.
  """
  bits = _check_bits(bits)
  codes_shape = jnp.shape(codes)
  if len(codes_shape) != 2:
    raise ValueError(f"`codes` must be a 2-D (M, K) array, got shape {codes_shape}.")
  if not jnp.issubdtype(jnp.result_type(codes), jnp.integer):
    raise TypeError(f"`codes` must be an integer array, got dtype {jnp.result_type(codes)}.")
  m, k = codes_shape
  if k % ACTIVATION_GROUP:
    raise ValueError(
      f"K (the last axis of `codes`, {k}) must be a multiple of {ACTIVATION_GROUP} (T-MAC's activation group g)."
    )
  group_size = _check_group_size(group_size, k)
  for name, arr in (("scales", scales), ("zeros", zeros)):
    if jnp.shape(arr) != (m, k // group_size):
      raise ValueError(f"`{name}` must have shape (M, K / group_size) = {(m, k // group_size)}, got {jnp.shape(arr)}.")
    if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
      raise TypeError(f"`{name}` must be a floating array, got dtype {jnp.result_type(arr)}.")
  if _is_concrete(codes):
    values = np.asarray(codes)
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
      raise ValueError(
        f"`codes` must lie in [0, {1 << bits}) for {bits}-bit weights, got values in [{values.min()}, {values.max()}]."
      )
  return _pack(jnp.asarray(codes), jnp.asarray(scales), jnp.asarray(zeros), bits, group_size)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _pack(codes, scales, zeros, bits, group_size) -> TMACWeights:
  m, k = codes.shape
  rows = -(-m // ROWS_PER_WORD) * ROWS_PER_WORD
  c = jnp.pad(codes.astype(jnp.int32), ((0, rows - m), (0, 0)))
  planes = (c[None] >> jnp.arange(bits, dtype=jnp.int32)[:, None, None]) & 1  # (b, M', K)
  quads = planes.reshape(bits, rows, k // ACTIVATION_GROUP, ACTIVATION_GROUP)
  idx = functools.reduce(jnp.bitwise_or, [quads[..., t] << t for t in range(ACTIVATION_GROUP)])
  slots = idx.reshape(bits, ROWS_PER_WORD, rows // ROWS_PER_WORD, k // ACTIVATION_GROUP).astype(jnp.uint32)
  # uint32, so the top field may use the sign bit.
  words = functools.reduce(jnp.bitwise_or, [slots[:, t] << (4 * t) for t in range(ROWS_PER_WORD)])
  return TMACWeights(jax.lax.bitcast_convert_type(words, jnp.int32), scales, zeros, bits, group_size, (m, k))


def unpack_indices(packed: TMACWeights) -> jax.Array:
  """The 4-bit indices ``idx_i[m, j]`` as int32 (bits, M', K/4), padded rows included."""
  words = _check_packed(packed).indices
  shifts = (4 * jnp.arange(ROWS_PER_WORD, dtype=jnp.int32))[None, :, None, None]
  # Arithmetic shift of a signed word, then the mask: correct for the top field too.
  idx = (words[:, None] >> shifts) & (TABLE_ENTRIES - 1)
  return idx.reshape(words.shape[0], -1, words.shape[-1])


def _index_bits(idx: jax.Array) -> jax.Array:
  """(..., K/4) indices to their (..., K) bits, little-endian within each group of 4."""
  bit = (idx[..., None] >> jnp.arange(ACTIVATION_GROUP, dtype=jnp.int32)) & 1
  return bit.reshape(*idx.shape[:-1], -1)


def dequantize(packed: TMACWeights, dtype=jnp.float32) -> jax.Array:
  """The (M, K) weights ``s·(w − z)`` rebuilt from the bit-planes (the dequantize-then-matmul reference)."""
  _check_packed(packed)
  try:
    floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    # An integer dtype truncated the fractional zero points and scales: wrong weights, silently.
    raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}.")
  m, k = packed.shape
  bits = _index_bits(unpack_indices(packed))[:, :m]  # (b, M, K)
  codes = sum(bits[i] << i for i in range(packed.bits)).astype(dtype)
  groups = codes.reshape(m, -1, packed.group_size)
  scale = packed.scales.astype(dtype)[..., None]
  return ((groups - packed.zeros.astype(dtype)[..., None]) * scale).reshape(m, k)


def lookup_count(packed: TMACWeights, num_rows: int = 1) -> int:
  """Table lookups of one product with ``num_rows`` activation rows N: ``N·bits·M·K/4`` (linear in the bit
  width)."""
  _check_packed(packed)
  if isinstance(num_rows, bool) or not isinstance(num_rows, (int, np.integer)) or num_rows < 0:
    raise ValueError(f"`num_rows` must be an int >= 0 (activation rows N), got {num_rows!r}.")
  m, k = packed.shape
  return num_rows * packed.bits * m * (k // ACTIVATION_GROUP)


# ------------------------------------------------------------------------------------------------------------
# Tables.


def _sign_patterns(signed: bool) -> np.ndarray:
  """(16, 4): bit_t(p), or 2·bit_t(p) − 1 when signed."""
  bits = (np.arange(TABLE_ENTRIES)[:, None] >> np.arange(ACTIVATION_GROUP)[None, :]) & 1
  return (2 * bits - 1 if signed else bits).astype(np.float32)


def build_tables(x: jax.Array, *, signed: bool = True, mirrored: bool = False) -> jax.Array:
  """The lookup tables of each group of 4 activations (the paper's table construction).

  Args:
    x: (..., K) activations, K a multiple of 4.
    signed: the ±1 form ``T'_j[p] = Σ_t x[4j+t]·(2 bit_t(p) − 1)`` (default), else the {0, 1} form
      ``T_j[p] = Σ_t x[4j+t]·bit_t(p)``; ``T' = 2T − Σ_t x[4j+t]``.
    mirrored: return only the 8 odd entries ``T'[1], T'[3], …, T'[15]`` of the ±1 form; the even ones follow from
      ``T'[15 − p] = −T'[p]`` (:func:`expand_mirrored`).

  Returns:
    (..., K/4, 16), or (..., K/4, 8) when mirrored.
  """
  x = _check_activations(x)
  if mirrored and not signed:
    raise ValueError("`mirrored=True` needs the ±1 form (`signed=True`): the {0, 1} table is not antisymmetric.")
  groups = x.reshape(*x.shape[:-1], -1, ACTIVATION_GROUP)
  pattern = _sign_patterns(signed)
  if mirrored:
    pattern = pattern[1::2]
  # A contraction with the 0/±1 patterns, not a broadcast-multiply-sum: jaxlib 0.10.2's XLA:CPU "ynn" fusion
  # miscompiles the latter for (1, ≥ 64, 4) inputs. Sums of four ±x_t, so integer-valued x gives exact tables.
  return jnp.einsum("...jt,pt->...jp", groups, jnp.asarray(pattern, x.dtype), precision=jax.lax.Precision.HIGHEST)


def expand_mirrored(half: jax.Array) -> jax.Array:
  """The 16-entry ±1 table from its 8 odd entries: ``T'[p] = half[p // 2]`` for odd p, ``−half[(15 − p) // 2]``
  for even p (T-MAC's mirror consolidation)."""
  if half.shape[-1] != MIRRORED_ENTRIES:
    raise ValueError(f"the last axis of `half` must hold {MIRRORED_ENTRIES} entries, got {half.shape[-1]}.")
  p = np.arange(TABLE_ENTRIES)
  odd = p % 2 == 1
  source = np.where(odd, p // 2, (15 - p) // 2)
  sign = np.where(odd, 1, -1).astype(np.int8)
  return half[..., source] * jnp.asarray(sign, half.dtype)


def quantize_tables(tables: jax.Array, group_size: int) -> tuple[jax.Array, jax.Array]:
  """int8 tables with one scale per activation row and weight group (T-MAC's table quantization).

  ``lut_scale = max |T'| / 127`` over the ``group_size / 4`` tables of a group, ``q = round(T' / lut_scale)``, so
  ``|q·lut_scale − T'| ≤ lut_scale / 2`` for every entry (no clipping: the largest entry maps to ±127).

  Args:
    tables: (..., K/4, E) float tables (E = 16 or 8).
    group_size: inputs per group; ``group_size / 4`` must divide K/4.

  Returns:
    ``(q, lut_scale)``: int8 (..., K/4, E) and float (..., K / group_size).
  """
  if jnp.ndim(tables) < 2:
    raise ValueError(f"`tables` must have shape (..., K/4, E), got {jnp.shape(tables)}.")
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
    # 0 ended in a ZeroDivisionError, a negative or float one in a cryptic reshape error.
    raise ValueError(f"`group_size` must be a positive int, got {group_size!r}.")
  if group_size % ACTIVATION_GROUP or tables.shape[-2] % (group_size // ACTIVATION_GROUP):
    raise ValueError(
      f"`group_size` ({group_size}) must be a multiple of 4 whose quarter divides the {tables.shape[-2]} tables."
    )
  per_group = group_size // ACTIVATION_GROUP
  grouped = tables.reshape(*tables.shape[:-2], -1, per_group, tables.shape[-1])
  lut_scale = jnp.max(jnp.abs(grouped), axis=(-2, -1)) / 127.0
  # A group of zero activations has all-zero tables: any positive divisor gives q = 0.
  safe = jnp.where(lut_scale > 0, lut_scale, jnp.ones_like(lut_scale))[..., None, None]
  q = jnp.clip(jnp.round(grouped / safe), -127, 127).astype(jnp.int8)
  return q.reshape(tables.shape), lut_scale


# ------------------------------------------------------------------------------------------------------------
# Matmul.


@functools.partial(jax.jit, static_argnames=("impl", "int8_tables", "algorithm", "interpret"))
def matmul(
  x: jax.Array,
  packed: TMACWeights,
  *,
  impl: str | None = None,
  int8_tables: bool = False,
  algorithm: Callable[..., jax.Array] | None = None,
  interpret: bool | None = None,
) -> jax.Array:
  """``x @ Ŵᵀ`` with low-bit weights by table lookup (T-MAC's LUT-based mpGEMM).

  Args:
    x: (..., K) float activations (N = the product of the leading axes; N = 1 is the GEMV of decoding; N = 0
      gives an empty result).
    packed: weights from :func:`preprocess`.
    impl: static, ``"pallas"``, ``"xla"`` or ``None`` (``toolkit.kernels.dispatch.default_impl()``: Pallas on
      GPU/TPU, XLA on CPU).
    int8_tables: static, quantize the tables to int8 (:func:`quantize_tables`) and sum the lookups in integers.
    algorithm: static, the XLA formulation: :func:`lut_gather`, :func:`bitserial_matmul`, :func:`onehot_lut`
      (or any function of their signature), or ``None`` (see the module docstring); must be ``None`` with
      ``impl="pallas"``.
    interpret: static, run the Pallas kernel in interpret mode (``None``: on CPU only); the XLA path ignores it.

  Returns:
    (..., M) in the dtype of ``x`` (tables and sums are float32 whatever it is).

  >>> codes = jnp.arange(8 * 32).reshape(8, 32) % 8  # 3-bit codes
  >>> packed = preprocess(codes, jnp.ones((8, 1)), jnp.zeros((8, 1)), bits=3, group_size=32)
  >>> x = jnp.ones((1, 32))
  >>> lut = matmul(x, packed, algorithm=lut_gather)
  >>> serial = matmul(x, packed, algorithm=bitserial_matmul)
  >>> pallas = matmul(x, packed, impl="pallas", interpret=True)
  >>> [float(v) for v in lut[0, :3]], bool((lut == serial).all() and (lut == pallas).all())
  ([112.0, 112.0, 112.0], True)
  """
  impl = dispatch.check_impl(impl)
  if algorithm is not None and not callable(algorithm):
    raise TypeError(
      f"`algorithm` must be None or a function (x, packed, *, int8_tables) -> y such as "
      f"tmac.lut_gather, tmac.bitserial_matmul or tmac.onehot_lut, got {algorithm!r}."
    )
  m, k = _check_packed(packed).shape
  x = _check_activations(x, k)
  lead = x.shape[:-1]
  x2 = x.reshape(-1, k).astype(jnp.float32)
  n = x2.shape[0]
  if impl == "pallas" and algorithm is not None:
    raise ValueError(f"`algorithm` selects an XLA formulation; it must be None with impl='pallas', got {algorithm!r}.")
  if n == 0:
    # An empty batch is a valid (0, K) @ (K, M) product, as in jnp.matmul; the kernels' tilings divide by N.
    return jnp.zeros((*lead, m), x.dtype)
  if impl == "pallas":
    y = _matmul_pallas(x2, packed, int8_tables, interpret=dispatch.default_interpret(interpret))[:, :m]
  else:
    if algorithm is None:
      algorithm = lut_gather if int8_tables or n <= _LUT_MAX_ROWS else bitserial_matmul
    y = algorithm(x2, packed, int8_tables=int8_tables)
  return y.reshape(*lead, m).astype(x.dtype)


def _needs_float_tables(int8_tables: bool, name: str) -> None:
  if int8_tables:
    raise ValueError(f"`int8_tables=True` quantizes the lookup tables; it needs algorithm=lut_gather, not {name}.")


def _group_terms(x2: jax.Array, packed: TMACWeights) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(N, G) activation sums Σ_{k∈γ} x; (M', G) scales and biases ``s·((2^b − 1)/2 − z)`` of the ±1 form."""
  m = packed.shape[0]
  rows = packed.indices.shape[1] * ROWS_PER_WORD
  sums = x2.reshape(x2.shape[0], -1, packed.group_size).sum(-1)
  scales = packed.scales.astype(jnp.float32)
  bias = scales * ((2**packed.bits - 1) / 2 - packed.zeros.astype(jnp.float32))
  pad = ((0, rows - m), (0, 0))
  return sums, jnp.pad(scales, pad), jnp.pad(bias, pad)


def _rows_per_block(n: int, word_rows: int) -> int:
  """Word rows per lookup block: about 32 activation-row × word-row pairs, a power of 2 dividing ``word_rows``."""
  r = max(1, 32 // max(n, 1))
  r = 1 << (r.bit_length() - 1)
  while word_rows % r:
    r //= 2
  return r


def lut_gather(x2: jax.Array, packed: TMACWeights, *, int8_tables: bool = False) -> jax.Array:
  """T-MAC's table lookup on XLA, by gathers: per plane ``Σ_{j∈γ} T'_j[idx_i[m, j]]``, blocked over rows
  (``lax.map``). x2 (N, K) float32 → (N, M) float32; with ``int8_tables`` the tables are int8
  (:func:`quantize_tables`) and the lookups are summed in int32."""
  _check_rows(x2, packed)
  n = x2.shape[0]
  bits, word_rows, groups = packed.indices.shape
  per_group = packed.group_size // ACTIVATION_GROUP
  tables = build_tables(x2)  # (N, K/4, 16)
  if int8_tables:
    tables, lut_scale = quantize_tables(tables, packed.group_size)
  flat = tables.reshape(n, groups * TABLE_ENTRIES)
  offsets = TABLE_ENTRIES * jnp.arange(groups, dtype=jnp.int32)
  shifts = (4 * jnp.arange(ROWS_PER_WORD, dtype=jnp.int32))[:, None, None]
  r = _rows_per_block(n, word_rows)
  blocks = packed.indices.reshape(bits, word_rows // r, r, groups).transpose(1, 0, 2, 3)
  acc_dtype = jnp.int32 if int8_tables else jnp.float32

  def block(words):  # (b, r, K/4) -> (N, 8, r, G)
    acc = None
    for i in range(bits):
      idx = ((words[i][None] >> shifts) & (TABLE_ENTRIES - 1)) + offsets  # (8, r, K/4)
      # Indices are < 16 by the mask, so the gather needs no bounds handling.
      v = flat.at[:, idx].get(mode="promise_in_bounds").astype(acc_dtype)
      plane = v.reshape(n, ROWS_PER_WORD, r, -1, per_group).sum(-1)
      # Σ_i 2^i (…) here; the common factor ½ of α_i = 2^{i−1} is applied once, below.
      term = plane * (1 << i)
      acc = term if acc is None else acc + term
    return acc

  # lax.map keeps one block's gathered values (a few MB) in cache instead of materialising N·b·M·K/4 of them.
  acc = jax.lax.map(block, blocks)  # (blocks, N, 8, r, G)
  acc = acc.transpose(1, 2, 0, 3, 4).reshape(n, word_rows * ROWS_PER_WORD, -1).astype(jnp.float32)
  acc = acc * 0.5
  if int8_tables:
    acc = acc * lut_scale[:, None, :]
  return _combine(acc, x2, packed)[:, : packed.shape[0]]


def _combine(acc: jax.Array, x2: jax.Array, packed: TMACWeights) -> jax.Array:
  """``y = Σ_γ s[m, γ]·acc[n, m, γ] + Σ_γ s[m, γ]((2^b − 1)/2 − z[m, γ])·Σ_{k∈γ} x[n, k]`` (the ±1 form + bias)."""
  sums, scales, bias = _group_terms(x2, packed)
  return jnp.einsum("nmg,mg->nm", acc, scales, precision=_HIGHEST) + jnp.einsum(
    "ng,mg->nm", sums, bias, precision=_HIGHEST
  )


def bitserial_matmul(x2: jax.Array, packed: TMACWeights, *, int8_tables: bool = False) -> jax.Array:
  """b matmuls with ±1 bit-planes: ``Σ_i 2^{i−1} x @ (s ⊙ S_i)ᵀ``, the lookups' sums computed as products.
  x2 (N, K) float32 → (N, M) float32; float tables only."""
  _check_rows(x2, packed)
  _needs_float_tables(int8_tables, "bitserial_matmul")
  sums, scales, bias = _group_terms(x2, packed)
  expanded = jnp.repeat(scales, packed.group_size, axis=1)  # (M', K)
  idx = unpack_indices(packed)
  y = jnp.einsum("ng,mg->nm", sums, bias, precision=_HIGHEST)
  for i in range(packed.bits):
    signs = (2 * _index_bits(idx[i]) - 1).astype(jnp.float32)  # (M', K)
    # (M', K) @ (K, N): on XLA:CPU this layout is many times faster than x @ Wᵀ.
    y = y + (2.0 ** (i - 1)) * jnp.dot(signs * expanded, x2.T, precision=_HIGHEST).T
  return y[:, : packed.shape[0]]


def onehot_lut(x2: jax.Array, packed: TMACWeights, *, int8_tables: bool = False) -> jax.Array:
  """The lookup as a contraction of one-hot indices with the tables (16× the entries, so 4× a matmul's work).
  x2 (N, K) float32 → (N, M) float32; float tables only."""
  _check_rows(x2, packed)
  _needs_float_tables(int8_tables, "onehot_lut")
  n = x2.shape[0]
  per_group = packed.group_size // ACTIVATION_GROUP
  tables = build_tables(x2)  # (N, K/4, 16)
  idx = unpack_indices(packed)  # (b, M', K/4)
  onehot = sum(
    (2.0 ** (i - 1)) * jax.nn.one_hot(idx[i], TABLE_ENTRIES, dtype=jnp.float32) for i in range(packed.bits)
  )  # (M', K/4, 16)
  g = tables.shape[1] // per_group
  acc = jnp.einsum(
    "ngjp,mgjp->nmg",
    tables.reshape(n, g, per_group, TABLE_ENTRIES),
    onehot.reshape(-1, g, per_group, TABLE_ENTRIES),
    precision=_HIGHEST,
  )
  return _combine(acc, x2, packed)[:, : packed.shape[0]]


# ------------------------------------------------------------------------------------------------------------
# Pallas kernel.

_BLOCK_N = 16  # tl.dot needs at least 16 rows
_BLOCK_WORD_ROWS = 32  # 8 × 32 = 256 weight rows per program


def _next_pow2(v: int) -> int:
  return 1 << max(v - 1, 0).bit_length()


def _tmac_kernel(
  tables_ref,
  words_ref,
  scales_ref,
  bias_ref,
  sums_ref,
  lut_scale_ref,
  out_ref,
  *,
  bits: int,
  per_group: int,
  num_groups: int,
  int8_tables: bool,
):
  """One (activation-row block, weight-row block) of y; loops over the K/group_size weight groups.

  Refs: tables (8, bn, K/4) odd ±1 entries; words (b, br, K/4); scales and bias (G, 8, br); sums and lut_scale
  (G, bn); out (8, bn, br), slot t holding weight rows ``t·M'/8 + r``.
  """
  lane_dtype = jnp.int8 if int8_tables else jnp.float32
  acc_dtype = jnp.int32 if int8_tables else jnp.float32
  # Full float32 products (Triton would use tf32 by default); integer dots are exact anyway.
  precision = None if int8_tables else jax.lax.Precision.HIGHEST
  bn, br = out_ref.shape[1], out_ref.shape[2]

  def group_step(g, accs):
    cols = pl.ds(g * per_group, per_group)
    tables = [tables_ref[q, :, cols] for q in range(MIRRORED_ENTRIES)]  # (bn, K_g/4) each
    words = [words_ref[i, :, cols] for i in range(bits)]  # (br, K_g/4) each
    sums = sums_ref[g, :]
    level = lut_scale_ref[g, :] if int8_tables else None
    new = []
    for t in range(ROWS_PER_WORD):
      idx = [(w >> (4 * t)) & (TABLE_ENTRIES - 1) for w in words]
      part = jnp.zeros((bn, br), acc_dtype)
      for q in range(MIRRORED_ENTRIES):
        p = 2 * q + 1
        # Σ_i 2^i ([idx_i = p] − [idx_i = 15 − p]): the mirrored lookup of entry p over all planes, |·| ≤ 15.
        e = sum((1 << i) * ((ix == p).astype(jnp.int32) - (ix == 15 - p).astype(jnp.int32)) for i, ix in enumerate(idx))
        part = part + jax.lax.dot_general(
          tables[q],
          e.astype(lane_dtype),
          (((1,), (1,)), ((), ())),
          precision=precision,
          preferred_element_type=acc_dtype,
        )
      value = 0.5 * part.astype(jnp.float32)
      if int8_tables:
        value = value * level[:, None]
      new.append(accs[t] + value * scales_ref[g, t, :][None, :] + sums[:, None] * bias_ref[g, t, :][None, :])
    return tuple(new)

  init = tuple(jnp.zeros((bn, br), jnp.float32) for _ in range(ROWS_PER_WORD))
  accs = jax.lax.fori_loop(0, num_groups, group_step, init)
  for t in range(ROWS_PER_WORD):
    out_ref[t] = accs[t]


def _matmul_pallas(x2: jax.Array, packed: TMACWeights, int8_tables: bool, interpret: bool) -> jax.Array:
  """(N, K) @ Ŵᵀ by :func:`_tmac_kernel`: grid (activation-row blocks, weight-row blocks), K looped inside."""
  n, k = x2.shape
  bits, word_rows, groups = packed.indices.shape
  num_groups = k // packed.group_size
  per_group = packed.group_size // ACTIVATION_GROUP
  bn = max(_BLOCK_N, _next_pow2(min(n, 64)))
  n_pad = -(-n // bn) * bn
  br = min(_BLOCK_WORD_ROWS, _next_pow2(word_rows))
  wr_pad = -(-word_rows // br) * br

  xp = jnp.pad(x2, ((0, n_pad - n), (0, 0)))
  tables = build_tables(xp, mirrored=True)  # (N', K/4, 8)
  if int8_tables:
    tables, lut_scale = quantize_tables(tables, packed.group_size)
  else:
    lut_scale = jnp.ones((n_pad, num_groups), jnp.float32)
  tables = tables.transpose(2, 0, 1)  # (8, N', K/4)
  sums, scales, bias = _group_terms(xp, packed)
  words = jnp.pad(packed.indices, ((0, 0), (0, wr_pad - word_rows), (0, 0)))

  def slot_major(a):  # (M', G) -> (G, 8, word rows), zero-padded (padded rows get scale and bias 0)
    a = a.reshape(ROWS_PER_WORD, word_rows, num_groups).transpose(2, 0, 1)
    return jnp.pad(a, ((0, 0), (0, 0), (0, wr_pad - word_rows)))

  kernel = functools.partial(
    _tmac_kernel, bits=bits, per_group=per_group, num_groups=num_groups, int8_tables=int8_tables
  )
  out = pl.pallas_call(
    kernel,
    out_shape=jax.ShapeDtypeStruct((ROWS_PER_WORD, n_pad, wr_pad), jnp.float32),
    grid=(n_pad // bn, wr_pad // br),
    in_specs=[
      pl.BlockSpec((MIRRORED_ENTRIES, bn, groups), lambda i, j: (0, i, 0)),
      pl.BlockSpec((bits, br, groups), lambda i, j: (0, j, 0)),
      pl.BlockSpec((num_groups, ROWS_PER_WORD, br), lambda i, j: (0, 0, j)),
      pl.BlockSpec((num_groups, ROWS_PER_WORD, br), lambda i, j: (0, 0, j)),
      pl.BlockSpec((num_groups, bn), lambda i, j: (0, i)),
      pl.BlockSpec((num_groups, bn), lambda i, j: (0, i)),
    ],
    out_specs=pl.BlockSpec((ROWS_PER_WORD, bn, br), lambda i, j: (0, i, j)),
    interpret=interpret,
    compiler_params=dispatch.compiler_params(interpret),
  )(tables, words, slot_major(scales), slot_major(bias), sums.T, lut_scale.T.astype(jnp.float32))
  # out[t, n, r] is weight row t·M'/8 + r.
  out = out[:, :n, :word_rows].transpose(1, 0, 2).reshape(n, word_rows * ROWS_PER_WORD)
  return out


__all__ = [
  "ACTIVATION_GROUP",
  "MIRRORED_ENTRIES",
  "ROWS_PER_WORD",
  "SUPPORTED_BITS",
  "TABLE_ENTRIES",
  "TMACWeights",
  "bitserial_matmul",
  "build_tables",
  "dequantize",
  "expand_mirrored",
  "lookup_count",
  "lut_gather",
  "matmul",
  "onehot_lut",
  "preprocess",
  "quantize_tables",
  "unpack_indices",
]
