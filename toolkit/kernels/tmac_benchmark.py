"""Benchmark constructions and measurements for T-MAC's table-lookup matmul (apart from the method itself).

Shared by ``experiments/tmac.py`` and ``experiments/bench_tmac.py``: random low-bit weights, the memory read
bandwidth, interleaved timing of every formulation against dequantize-then-matmul and the fp32 matmul, the
exactness check in integer arithmetic, the linear fit of time against bits, and the markdown table.

>>> round(linear_fit([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])["slope_ms_per_bit"], 9)
2.0
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks
from toolkit.kernels import dispatch, tmac

# The timed methods: the three XLA formulations of the lookup, then the two baselines.
METHODS = ("lut", "bitserial", "onehot", "dequant", "fp32")
ALGORITHMS = {"lut": tmac.lut_gather, "bitserial": tmac.bitserial_matmul, "onehot": tmac.onehot_lut}
# The fields of a ``time_sweep`` row that ``fits`` and ``table_lines`` read, and those ``with_bounds`` adds.
_ROW_FIELDS = ("n", "bits", "m", "k", "ms", "weight_bytes", "fp16_bytes", "lookups")
_BOUND_FIELDS = ("bandwidth_bound_ms", "fp32_bandwidth_bound_ms")


def _check_sizes(m, k, group_size) -> tuple[int, int, int]:
  m, k, group_size = (_checks.check_int(v, name) for v, name in ((m, "m"), (k, "k"), (group_size, "group_size")))
  if k % group_size:  # else the last k % group_size columns would have no scale
    raise ValueError(f"`k` ({k}) must be a multiple of `group_size` ({group_size}).")
  return m, k, group_size


def _check_bits_list(bits_list, name: str = "bits_list") -> tuple[int, ...]:
  bits_list = () if isinstance(bits_list, str) else tuple(bits_list)
  if not bits_list or any(
    isinstance(b, bool) or not isinstance(b, int | np.integer) or b not in tmac.SUPPORTED_BITS for b in bits_list
  ):
    raise ValueError(
      f"`{name}` must be a non-empty sequence of bit widths from {tmac.SUPPORTED_BITS}, got {bits_list!r}."
    )
  return bits_list


def _check_rows(results, fields: tuple[str, ...], what: str) -> None:
  if isinstance(results, Mapping | str) or not isinstance(results, Sequence) or not results:
    raise ValueError(f"`results` must be a non-empty list of {what}, got {type(results).__name__} {results!r:.80}.")
  for row in results:
    missing = [f for f in fields if not isinstance(row, Mapping) or f not in row]
    if missing:
      raise ValueError(f"`results` must be a non-empty list of {what}; a row lacks {missing}.")


def random_weights(key: jax.Array, m: int, k: int, bits: int, group_size: int, integer: bool = False):
  """Uniform codes with fp16 scales and zeros (integer-valued ones when ``integer``)."""
  m, k, group_size = _check_sizes(m, k, group_size)
  bits = dispatch.check_bits(bits, tmac.SUPPORTED_BITS)
  kc, ks, kz = jax.random.split(key, 3)
  codes = jax.random.randint(kc, (m, k), 0, 2**bits, dtype=jnp.int32)
  g = k // group_size
  if integer:
    scales = jax.random.randint(ks, (m, g), 1, 4).astype(jnp.float16)
    zeros = jax.random.randint(kz, (m, g), 0, 2**bits).astype(jnp.float16)
  else:
    scales = jax.random.uniform(ks, (m, g), minval=0.005, maxval=0.02).astype(jnp.float16)
    zeros = jax.random.uniform(kz, (m, g), maxval=2**bits - 1).astype(jnp.float16)
  return codes, scales, zeros


def measure_bandwidth(mib: int = 256, num_repeats: int = 5) -> float:
  """Memory read bandwidth in GB/s: median time of summing a ``mib`` MiB float32 array (no write-back)."""
  mib, num_repeats = _checks.check_int(mib, "mib"), _checks.check_int(num_repeats, "num_repeats")
  a = jnp.ones((mib * (1 << 20) // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(a).block_until_ready()
  times = []
  for _ in range(num_repeats):
    start = time.perf_counter()
    total(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return a.nbytes / float(np.median(times)) / 1e9


def method_fn(method: str):
  """``f(x, packed, w)`` for each method of ``METHODS``; ``w`` is the dense float32 matrix, read by ``fp32`` only."""
  if method in ALGORITHMS:
    return jax.jit(lambda x, packed, w: tmac.matmul(x, packed, impl="xla", algorithm=ALGORITHMS[method]))
  if method == "dequant":
    return jax.jit(lambda x, packed, w: jnp.dot(tmac.dequantize(packed), x.T).T)
  if method == "fp32":
    return jax.jit(lambda x, packed, w: jnp.dot(w, x.T).T)
  raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")


def time_sweep(key: jax.Array, m: int, k: int, n: int, bits_list, group_size: int, methods, num_repeats: int) -> list:
  """Times every method at every bit width on the same activations, all interleaved in each repeat (so a change
  of load on the shared machine hits every bit width alike), and returns one dict of medians (ms) per bit width."""
  # All checked before anything compiles or runs.
  m, k, group_size = _check_sizes(m, k, group_size)
  n, num_repeats = _checks.check_int(n, "n"), _checks.check_int(num_repeats, "num_repeats")
  bits_list = _check_bits_list(bits_list)
  methods = () if isinstance(methods, str) else tuple(methods)  # a bare "lut" would be the methods "l", "u", "t"
  if not methods or any(not isinstance(name, str) or name not in METHODS for name in methods):
    raise ValueError(f"`methods` must be a non-empty sequence of names from {METHODS}, got {methods!r}.")
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (n, k), jnp.float32)
  fns = {name: method_fn(name) for name in methods}
  setups, rel_err = {}, {}
  for bits in bits_list:
    codes, scales, zeros = random_weights(jax.random.fold_in(kw, bits), m, k, bits, group_size)
    packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=group_size)
    w = tmac.dequantize(packed)
    reference = jnp.dot(w, x.T, precision=jax.lax.Precision.HIGHEST).T
    setups[bits] = (packed, w)
    rel_err[bits] = {}
    for name, f in fns.items():  # compile, and check every method against the reference
      out = f(x, packed, w).block_until_ready()
      rel_err[bits][name] = float(jnp.max(jnp.abs(out - reference)) / jnp.max(jnp.abs(reference)))
  times = {(bits, name): [] for bits in bits_list for name in fns}
  for _ in range(num_repeats):
    for bits in bits_list:
      packed, w = setups[bits]
      for name, f in fns.items():
        start = time.perf_counter()
        f(x, packed, w).block_until_ready()
        times[bits, name].append(time.perf_counter() - start)
  medians = {key: 1e3 * float(np.median(t)) for key, t in times.items()}
  if "fp32" in fns:
    # The same dense product at every bit width: one median over all its samples, so the per-row ratios are not
    # swayed by where in the loop (after which cache-flushing call) a bit width's fp32 sample fell.
    pooled = 1e3 * float(np.median([v for bits in bits_list for v in times[bits, "fp32"]]))
    medians.update({(bits, "fp32"): pooled for bits in bits_list})
  results = []
  for bits in bits_list:
    packed = setups[bits][0]
    results.append(
      {
        "n": n,
        "bits": bits,
        "m": m,
        "k": k,
        "ms": {name: medians[bits, name] for name in fns},
        "ms_all": {name: [1e3 * v for v in times[bits, name]] for name in fns},
        "max_rel_err": rel_err[bits],
        "weight_bytes": packed.nbytes,
        "index_bytes": int(packed.indices.size) * 4,
        "fp16_bytes": 2 * m * k,
        "lookups": tmac.lookup_count(packed, n),
      }
    )
  return results


def with_bounds(result: dict, bandwidth_gbs: float) -> dict:
  """Adds the time to read the packed weights (and the fp32 matrix) once at the measured bandwidth."""
  _checks.check_positive(bandwidth_gbs, "bandwidth_gbs")
  if not isinstance(result, Mapping) or any(f not in result for f in ("weight_bytes", "m", "k")):
    raise ValueError(f"`result` must be a row of time_sweep (with weight_bytes, m and k), got {result!r:.80}.")
  return {
    **result,
    "bandwidth_bound_ms": 1e3 * result["weight_bytes"] / (bandwidth_gbs * 1e9),
    "fp32_bandwidth_bound_ms": 1e3 * 4 * result["m"] * result["k"] / (bandwidth_gbs * 1e9),
  }


def exact_check(key: jax.Array, *, m: int, k: int, n: int, group_size: int, bits_list, pallas_bits) -> dict:
  """Max |y − x·Ŵᵀ| with integer activations, scales and zeros (every sum exact in float32) for every XLA
  algorithm and bit width, and for Pallas (interpret mode on CPU) at ``pallas_bits``: ``{"errors": {name: max
  error}, "max_abs_err": the largest}``."""
  m, k, group_size = _check_sizes(m, k, group_size)
  n = _checks.check_int(n, "n")
  bits_list = _check_bits_list(bits_list)
  pallas_bits = () if isinstance(pallas_bits, str) else tuple(pallas_bits)
  if any(b not in bits_list for b in pallas_bits):  # a width outside bits_list was silently never run
    raise ValueError(f"`pallas_bits` must be a subset of `bits_list` {bits_list}, got {pallas_bits!r}.")
  errors = {}
  for bits in bits_list:
    kw, kx = jax.random.split(jax.random.fold_in(key, bits))
    codes, scales, zeros = random_weights(kw, m, k, bits, group_size, integer=True)
    x = jax.random.randint(kx, (n, k), -8, 9).astype(jnp.float32)
    w = np.repeat(np.asarray(scales, np.int64), group_size, 1) * (
      np.asarray(codes, np.int64) - np.repeat(np.asarray(zeros, np.int64), group_size, 1)
    )
    expected = np.asarray(x, np.int64) @ w.T
    packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=group_size)
    runs = {name: {"impl": "xla", "algorithm": algorithm} for name, algorithm in ALGORITHMS.items()}
    if bits in pallas_bits:
      runs["pallas"] = {"impl": "pallas"}
    for name, kwargs in runs.items():
      y = np.asarray(tmac.matmul(x, packed, **kwargs), np.float64)
      errors[f"{name}_w{bits}"] = float(np.max(np.abs(y - expected)))
    errors[f"dequantize_w{bits}"] = float(np.max(np.abs(np.asarray(tmac.dequantize(packed), np.float64) - w)))
  return {"errors": errors, "max_abs_err": max(errors.values())}


def linear_fit(bits, times) -> dict:
  """Least-squares line ``time = slope·bits + intercept`` and its R²."""
  b, t = np.asarray(bits, np.float64), np.asarray(times, np.float64)
  if b.ndim != 1 or b.shape != t.shape or b.size < 2:
    raise ValueError(f"`bits` and `times` must be 1-D of one length >= 2, got shapes {b.shape} and {t.shape}.")
  for name, v in (("bits", b), ("times", t)):
    if not np.isfinite(v).all():
      raise ValueError(f"`{name}` must be finite, got {v.tolist()}.")
  if np.unique(b).size < 2:  # one abscissa: the slope is undetermined
    raise ValueError(f"`bits` must hold at least two distinct values to fit a line, got {b.tolist()}.")
  slope, intercept = np.polyfit(b, t, 1)
  residual = t - (slope * b + intercept)
  total = np.sum((t - t.mean()) ** 2)
  r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
  return {"slope_ms_per_bit": float(slope), "intercept_ms": float(intercept), "r2": r2}


def fits(results: list[dict]) -> dict:
  """Per (N, method): the linear fit of median time against bits."""
  _check_rows(results, ("n", "bits", "ms"), "time_sweep rows")
  out = {}
  for n in sorted({r["n"] for r in results}):
    rows = sorted((r for r in results if r["n"] == n), key=lambda r: r["bits"])
    for method in rows[0]["ms"]:
      if method != "fp32":  # one pooled median: flat by construction
        out[(n, method)] = linear_fit([r["bits"] for r in rows], [r["ms"][method] for r in rows])
  return out


def table_lines(results: list[dict], bandwidth_gbs: float) -> list[str]:
  """The benchmark's Markdown table: milliseconds per method, ratios to the baselines and the bandwidth bound."""
  _check_rows(results, _ROW_FIELDS + _BOUND_FIELDS, "with_bounds rows")
  _checks.check_positive(bandwidth_gbs, "bandwidth_gbs")
  methods = [m for m in METHODS if any(m in r["ms"] for r in results)]
  head = " | ".join(f"{m} ms" for m in methods)
  lines = [
    (
      f"| N | bits | {head} | lut speed-up vs dequant | vs fp32 | weight MiB | fp16 / weight bytes | "
      f"bandwidth bound ms | lookups |"
    ),
    "|---" * (len(methods) + 8) + "|",
  ]
  for r in results:
    ms = r["ms"]
    cells = " | ".join(f"{ms[m]:.2f}" if m in ms else "—" for m in methods)
    ratio = lambda base, ms=ms: f"{ms[base] / ms['lut']:.2f}×" if base in ms else "—"
    lines.append(
      f"| {r['n']} | {r['bits']} | {cells} | {ratio('dequant')} | {ratio('fp32')} | "
      f"{r['weight_bytes'] / 2**20:.2f} | {r['fp16_bytes'] / r['weight_bytes']:.2f} | "
      f"{r['bandwidth_bound_ms']:.3f} | {r['lookups']:,} |"
    )
  fp32_bound = results[0]["fp32_bandwidth_bound_ms"]
  lines += [
    "",
    (
      f"fp32: one median pooled over the bit widths (the same product). Read bandwidth {bandwidth_gbs:.1f} "
      f"GB/s (sum of a float32 array larger than the caches); at that rate the fp32 matrix takes "
      f"{fp32_bound:.2f} ms, which the fp32 product can beat when part of the matrix stays in the last-level "
      "cache."
    ),
    "",
    "| N | method | slope ms/bit | intercept ms | R² |",
    "|---|---|---|---|---|",
  ]
  for (n, method), f in fits(results).items():
    lines.append(f"| {n} | {method} | {f['slope_ms_per_bit']:.2f} | {f['intercept_ms']:.2f} | {f['r2']:.3f} |")
  return lines


__all__ = [
  "ALGORITHMS",
  "METHODS",
  "exact_check",
  "fits",
  "linear_fit",
  "measure_bandwidth",
  "method_fn",
  "random_weights",
  "table_lines",
  "time_sweep",
  "with_bounds",
]
