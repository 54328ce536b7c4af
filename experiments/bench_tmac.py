"""T-MAC's table-lookup matmul against dequantize-then-matmul and the fp32 matmul on XLA:CPU, side by side.

  python -m experiments.bench_tmac                                  # 4096×4096, N = 1 and 32, 1–4 bits
  python -m experiments.bench_tmac --n=1 --bits=2,4 --methods=lut,dequant,fp32

For each activation count N, every method and bit width is timed in the same interleaved loop (medians of
``--repeats``; the machine may be shared, so read the ratios, not the absolute times). The table gives the
times, the speed-ups of the table lookup, the weight bytes read, the time to read them once at the measured
memory bandwidth, the lookup count, and a linear fit of time against bits per method. Compilation is not timed.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags

from toolkit.kernels import tmac_benchmark as bench

from . import tmac as tmac_experiment

FLAGS = flags.FLAGS
flags.DEFINE_integer("m", 4096, "Output rows M of the weight matrix.")
flags.DEFINE_integer("k", 4096, "Input size K.")
flags.DEFINE_list("n", ["1", "32"], "Activation rows N (1: GEMV).")
flags.DEFINE_list("bits", ["1", "2", "3", "4"], "Weight bit widths.")
flags.DEFINE_integer("group_size", 128, "Inputs per scale and zero point.")
flags.DEFINE_integer("repeats", 7, "Timed repeats (medians).")
flags.DEFINE_list("methods", list(bench.METHODS), f"Among {bench.METHODS}.")
flags.DEFINE_integer(
  "onehot_max_n",
  1,
  "Run the one-hot formulation only up to this N (its operand is M·K·4 float32 bytes).",
)
flags.DEFINE_integer("seed", 0, "Seed of the weights and activations.")


def main(argv):
  del argv
  config = tmac_experiment.get_config("full")
  config.m, config.k, config.group_size, config.repeats = (
    FLAGS.m,
    FLAGS.k,
    FLAGS.group_size,
    FLAGS.repeats,
  )
  config.n = tuple(int(v) for v in FLAGS.n)
  config.bits = tuple(int(v) for v in FLAGS.bits)
  config.methods = tuple(FLAGS.methods)
  config.onehot_max_n = FLAGS.onehot_max_n
  tmac_experiment.validate_config(config)
  bandwidth = bench.measure_bandwidth(config.bandwidth_mib)
  print(
    f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores (shared machine: compare ratios); "
    f"{config.m}×{config.k}, group {config.group_size}, fp16 scales and zeros; medians of {config.repeats} "
    f"interleaved repeats; compilation not timed; read bandwidth {bandwidth:.1f} GB/s",
    flush=True,
  )
  results = []
  key = jax.random.key(FLAGS.seed)
  for n in config.n:
    methods = [m for m in config.methods if m != "onehot" or n <= config.onehot_max_n]
    sweep = bench.time_sweep(
      jax.random.fold_in(key, n),
      config.m,
      config.k,
      n,
      config.bits,
      config.group_size,
      methods,
      config.repeats,
    )
    results += [bench.with_bounds(r, bandwidth) for r in sweep]
    worst = max(max(r["max_rel_err"][m] for m in methods if m != "fp32") for r in sweep)
    print(
      f"N = {n}: done; max relative error of every method vs dequantize-then-matmul {worst:.1e}",
      flush=True,
    )
  # Methods not run at some N (one-hot) leave those cells out: print one table per N.
  for n in config.n:
    print()
    print("\n".join(bench.table_lines([r for r in results if r["n"] == n], bandwidth)), flush=True)


if __name__ == "__main__":
  app.run(main)
