"""PaRIS in the `particles` library (N. Chopin), run in its own environment as a peer and a test oracle.

`particles` 0.4 needs numpy < 2 while jax 0.10 needs numpy >= 2, so this script runs under the virtual environment
that `make .venv-particles` builds, never under the toolkit's. It reads a JSON request on stdin and prints a JSON
reply on stdout; it imports neither jax nor toolkit.

Request: {"model": {"A", "Q", "R", "m0", "P0"} (scalar linear-Gaussian model, C = 1), "ys": [...],
          "functional": "sum_x" | "sum_xx_lag", "num_particles", "num_backward", "num_replicates", "seed",
          "resampling", "ess_min"}
Reply:   {"estimates": [...], "log_likelihoods": [...], "seconds": [...], "particles_version": "..."}
"""

import json
import sys
import time

import numpy as np
import particles
from particles import collectors
from particles import distributions as dists
from particles import state_space_models as ssms


def make_model(spec, functional):

  class ScalarLinearGauss(ssms.StateSpaceModel):
    default_params = dict(spec)  # noqa: RUF012 (the particles library's class-attribute convention)

    def PX0(self):
      return dists.Normal(loc=self.m0, scale=np.sqrt(self.P0))

    def PX(self, t, xp):
      return dists.Normal(loc=self.A * xp, scale=np.sqrt(self.Q))

    def PY(self, t, xp, x):
      return dists.Normal(loc=x, scale=np.sqrt(self.R))

    def upper_bound_log_pt(self, t):
      return -0.5 * np.log(2.0 * np.pi * self.Q)

    def add_func(self, t, xp, x):
      if functional == "sum_x":
        return x
      if t == 0:
        return np.zeros_like(x)
      return xp * x

  return ScalarLinearGauss()


def main():
  request = json.load(sys.stdin)
  model = make_model(request["model"], request["functional"])
  ys = np.asarray(request["ys"], dtype=float)
  np.random.seed(request.get("seed", 0))
  estimates, logliks, seconds = [], [], []
  for _ in range(request.get("num_replicates", 1)):
    fk = ssms.Bootstrap(ssm=model, data=ys)
    alg = particles.SMC(
      fk=fk,
      N=request["num_particles"],
      resampling=request.get("resampling", "multinomial"),
      ESSrmin=request.get("ess_min", 1.0),
      collect=[collectors.Paris(Nparis=request.get("num_backward", 2))],
    )
    start = time.perf_counter()
    alg.run()
    seconds.append(time.perf_counter() - start)
    estimates.append(float(np.asarray(alg.summaries.paris[-1])))
    logliks.append(float(alg.logLt))
  json.dump(
    {
      "estimates": estimates,
      "log_likelihoods": logliks,
      "seconds": seconds,
      "particles_version": getattr(particles, "__version__", "unknown"),
    },
    sys.stdout,
  )


if __name__ == "__main__":
  main()
