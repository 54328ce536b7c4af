"""Step time of ⊥AdamW against AdamW on the grokking MLP, side by side in one run.

  python -m experiments.bench_perpgrad            # prints a table; goal: ratio <= 1.10

Both optimisers train the same 226-200-200-113 bias-free MLP on the same (a + b) mod 113 training set (full
batch, 5108 samples). Each timing is a jitted chunk of ``--steps`` optimiser steps; the two are interleaved over
``--repeats`` rounds so that machine noise hits both alike, and the medians are compared.
"""

from __future__ import annotations

import statistics
import time

import jax
import optax
from absl import app, flags

from toolkit.data import modular_arithmetic
from toolkit.models import MLP
from toolkit.optim import perp_adamw

from . import grokking

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 50, "Optimiser steps per timed chunk.")
flags.DEFINE_integer("repeats", 15, "Interleaved timing rounds.")
flags.DEFINE_integer("p", 113, "Modulus of the task (sets the MLP's input and output widths).")


def time_chunks(advance, state, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state = advance(state)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return times


def bench(p: int = 113, steps: int = 50, repeats: int = 15) -> dict[str, float]:
  data = modular_arithmetic(jax.random.key(0), p=p)
  model = MLP(features=(200, 200, p))
  params = model.init(jax.random.key(1), data.x_train[:1])
  optimizers = {
    "AdamW": optax.adamw(0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),
    "⊥AdamW": perp_adamw(0.01),
  }
  advances, states = {}, {}
  for name, tx in optimizers.items():
    advances[name] = jax.jit(
      lambda s, tx=tx: grokking.train_epochs(
        s, data.x_train, data.y_train, model=model, tx=tx, loss="softmax", num_epochs=steps
      )
    )
    states[name] = grokking.TrainState(params, tx.init(params))
    states[name] = jax.block_until_ready(advances[name](states[name]))  # compile and warm up
  times = {name: [] for name in optimizers}
  for _ in range(repeats):
    for name in optimizers:
      times[name] += time_chunks(advances[name], states[name], 1)
  per_step = {name: statistics.median(t) / steps for name, t in times.items()}
  return {
    "adamw_ms": 1e3 * per_step["AdamW"],
    "perp_adamw_ms": 1e3 * per_step["⊥AdamW"],
    "ratio": per_step["⊥AdamW"] / per_step["AdamW"],
  }


def main(argv):
  del argv
  result = bench(FLAGS.p, FLAGS.steps, FLAGS.repeats)
  print(
    f"device: {jax.devices()[0].device_kind}, {FLAGS.steps} full-batch steps per chunk, "
    f"median of {FLAGS.repeats} interleaved chunks"
  )
  print("| optimiser | ms / step |")
  print("|---|---|")
  print(f"| AdamW | {result['adamw_ms']:.3f} |")
  print(f"| ⊥AdamW | {result['perp_adamw_ms']:.3f} |")
  print(f"| ratio ⊥AdamW / AdamW | {result['ratio']:.3f} (goal <= 1.10) |")


if __name__ == "__main__":
  app.run(main)
