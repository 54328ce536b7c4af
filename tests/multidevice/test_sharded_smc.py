"""PaRIS and PPG sharded over 8 CPU devices (replicate axis, particle axis) equal the single-device results."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from toolkit.smc import paris, ssm
from toolkit.smc import particle_gibbs as pg


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def data():
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, 31)
  return model, ys


def test_replicates_sharded_across_devices_equal_one_device():
  model, ys = data()
  keys = jax.random.split(jax.random.key(1), 16)
  run = jax.jit(
    jax.vmap(lambda k: pg.particle_gibbs(k, model, ys, lag_product, num_particles=16, num_sweeps=6, burn_in=2).estimate)
  )
  single = np.asarray(run(keys))
  mesh = jax.make_mesh((8,), ("replicates",), axis_types=(AxisType.Auto,))
  sharded_keys = jax.device_put(keys, NamedSharding(mesh, P("replicates")))
  sharded = run(sharded_keys)
  assert len(sharded.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(sharded), single, rtol=1e-5)


def test_particle_axis_sharded_across_devices_equals_one_device():
  model, ys = data()
  mesh = jax.make_mesh((8,), ("particles",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("particles"))
  run = lambda s: jax.jit(lambda k: paris.paris(k, model, ys, lag_product, num_particles=64, particle_sharding=s))(
    jax.random.key(2)
  )
  single, sharded = run(None), run(sharding)
  assert len(sharded.particles.sharding.device_set) == 8
  np.testing.assert_allclose(float(sharded.estimate), float(single.estimate), rtol=1e-4)
  np.testing.assert_allclose(float(sharded.log_likelihood), float(single.log_likelihood), rtol=1e-5)
