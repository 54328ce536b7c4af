"""KD, BinaryKL, BinaryKLNorm, the dual-head loss and gradient alignment (arXiv 2411.08937) against oracles."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_softmax, softmax
from scipy.stats import entropy

from toolkit.losses import distillation as dist
from toolkit.models import dual_head as dh

RNG = np.random.default_rng(0)
Z_S = RNG.normal(size=(6, 7)).astype(np.float32) * 3
Z_T = RNG.normal(size=(6, 7)).astype(np.float32) * 3
floats = st.floats(-20.0, 20.0, allow_nan=False, width=32)


def test_binary_kl_norm_is_log_cosh(x64):
  z_s, z_t = Z_S.astype(np.float64), Z_T.astype(np.float64)
  for temperature in (0.5, 2.0, 4.0):
    ours = np.asarray(dist.binary_kl_norm(z_s, z_t, temperature=temperature))
    closed = temperature**2 * np.sum(np.log(np.cosh((z_s - z_t) / (2 * temperature))), axis=-1)
    np.testing.assert_allclose(ours, closed, rtol=1e-10, atol=1e-12)
    # The authors' definition: KL(Bern(1/2) || Bern(σ(Δ / T))) per class, summed, times T².
    d = expit((z_s - z_t) / temperature)
    authors = temperature**2 * np.sum(_bernoulli_kl(0.5, d), axis=-1)
    np.testing.assert_allclose(ours, authors, rtol=1e-9)
  assert ours.shape == (6,)


def test_binary_kl_norm_float32_matches_log_cosh():
  ours = np.asarray(dist.binary_kl_norm(Z_S, Z_T))
  closed = 4.0 * np.sum(np.log(np.cosh((Z_S.astype(np.float64) - Z_T) / 4.0)), axis=-1)
  np.testing.assert_allclose(ours, closed, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(a=floats, b=floats, shift=floats)
def test_binary_kl_norm_properties(a, b, shift):
  z_s = jnp.array([a, -b, 0.5], jnp.float32)
  z_t = jnp.array([b, a, -0.5], jnp.float32)
  loss = float(dist.binary_kl_norm(z_s, z_t))
  assert loss >= -1e-6
  np.testing.assert_allclose(loss, float(dist.binary_kl_norm(z_t, z_s)), rtol=1e-5, atol=1e-5)  # symmetric in Δ
  np.testing.assert_allclose(loss, float(dist.binary_kl_norm(z_s + shift, z_t + shift)), rtol=1e-4, atol=1e-4)
  assert float(dist.binary_kl_norm(z_s, z_s)) == 0.0


def test_binary_kl_norm_gradient_zero_at_equal_logits_and_limits():
  grad = jax.grad(lambda s: jnp.sum(dist.binary_kl_norm(s, jnp.asarray(Z_T))))(jnp.asarray(Z_T))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)
  small = jnp.array([[1e-2]])
  np.testing.assert_allclose(float(dist.binary_kl_norm(small, 0 * small)[0]), 1e-4 / 8, rtol=1e-3)  # Δ²/8
  big = jnp.array([[200.0]])  # T|Δ|/2 − T² log 2
  np.testing.assert_allclose(float(dist.binary_kl_norm(big, 0 * big)[0]), 2 * 200 / 2 - 4 * np.log(2), rtol=1e-6)


def _bernoulli_kl(p, q):
  return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_binary_kl_matches_brute_force_bernoulli_kl(x64):
  z_s, z_t = Z_S.astype(np.float64), Z_T.astype(np.float64)
  for temperature in (1.0, 2.0):
    p_t, p_s = expit(z_t / temperature), expit(z_s / temperature)
    brute = temperature**2 * np.array(
      [sum(_bernoulli_kl(p_t[n, c], p_s[n, c]) for c in range(z_s.shape[1])) for n in range(z_s.shape[0])]
    )
    np.testing.assert_allclose(np.asarray(dist.binary_kl(z_s, z_t, temperature=temperature)), brute, rtol=1e-10)
  assert float(jnp.max(dist.binary_kl(z_s, z_s))) == 0.0
  # Not shift invariant, unlike softmax KD: it matches the logits themselves.
  assert float(dist.binary_kl(z_s + 3.0, z_s)[0]) > 0.1


def test_binary_kl_finite_at_extreme_logits():
  big = jnp.array([[80.0, -80.0]])
  loss = dist.binary_kl(-big, big)
  grad = jax.grad(lambda s: jnp.sum(dist.binary_kl(s, big)))(-big)
  assert np.isfinite(float(loss[0])) and np.all(np.isfinite(np.asarray(grad)))
  # Far beyond the clamp of the authors' code, KL(Bern(σ(40)) || Bern(σ(-40))) = softplus(40) ≈ 40 per class.
  np.testing.assert_allclose(float(loss[0]), 4 * 2 * 40.0, rtol=1e-4)


def test_kd_loss_matches_scipy_kl(x64):
  z_s, z_t = Z_S.astype(np.float64), Z_T.astype(np.float64)
  for temperature in (1.0, 4.0):
    p_t, p_s = softmax(z_t / temperature, axis=-1), softmax(z_s / temperature, axis=-1)
    expected = temperature**2 * np.array([entropy(p_t[n], p_s[n]) for n in range(z_s.shape[0])])
    np.testing.assert_allclose(np.asarray(dist.kd_loss(z_s, z_t, temperature=temperature)), expected, rtol=1e-10)
    # The same value from cross-entropy minus the teacher's entropy.
    ce = -np.sum(p_t * log_softmax(z_s / temperature, axis=-1), axis=-1)
    teacher_entropy = -np.sum(p_t * np.log(p_t), axis=-1)
    np.testing.assert_allclose(temperature**2 * (ce - teacher_entropy), expected, rtol=1e-10)
  np.testing.assert_allclose(np.asarray(dist.kd_loss(z_s, z_s + 5.0)), 0.0, atol=1e-12)  # softmax is shift invariant


def test_dual_head_terms_and_loss():
  labels = jnp.array([0, 1, 2, 3, 4, 5])
  aux = jnp.asarray(Z_S) + 1.0
  terms = dist.dual_head_terms(jnp.asarray(Z_S), aux, labels, jnp.asarray(Z_T))
  ce = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.asarray(Z_S), labels)
  np.testing.assert_allclose(np.asarray(terms.cross_entropy), np.asarray(ce), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(terms.distillation), np.asarray(dist.binary_kl_norm(aux, Z_T)), rtol=1e-6)
  total = dist.dual_head_loss(Z_S, aux, labels, Z_T, ce_weight=0.5, distillation_weight=2.0)
  np.testing.assert_allclose(np.asarray(total), 0.5 * np.asarray(ce) + 2 * np.asarray(terms.distillation), rtol=1e-6)
  # The teacher is a constant; the aux head gets no CE gradient and the original head no distillation gradient.
  g_t = jax.grad(lambda t: jnp.sum(dist.dual_head_loss(Z_S, aux, labels, t)))(jnp.asarray(Z_T))
  np.testing.assert_array_equal(np.asarray(g_t), 0.0)
  g_aux = jax.grad(lambda a: jnp.sum(dist.dual_head_terms(Z_S, a, labels, Z_T).cross_entropy))(aux)
  np.testing.assert_array_equal(np.asarray(g_aux), 0.0)


def test_jit_and_vmap_agree():
  for fn in (dist.kd_loss, dist.binary_kl, dist.binary_kl_norm):
    fn = functools.partial(fn, temperature=2.0)
    eager = fn(Z_S, Z_T)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(Z_S, Z_T)), np.asarray(fn(Z_S, Z_T)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(Z_S, Z_T)), np.asarray(eager), rtol=1e-6)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_align_gradients_removes_conflict(seed):
  rng = np.random.default_rng(seed)
  g_d = {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
  g_ce = {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
  out = dist.align_gradients(g_d, g_ce)
  d, c, o = _flat(g_d), _flat(g_ce), _flat(out)
  assert o @ c >= -1e-5 * np.linalg.norm(c) * np.linalg.norm(d)
  if d @ c >= 0:
    np.testing.assert_array_equal(o, d)  # nothing changes without a conflict
  else:
    np.testing.assert_allclose(o, d - (d @ c) / (c @ c) * c, rtol=1e-5, atol=1e-6)  # the PCGrad projection
    np.testing.assert_allclose(o @ c, 0.0, atol=1e-4)


def test_align_gradients_zero_reference_and_jit():
  g = {"w": jnp.array([1.0, -2.0])}
  zero = {"w": jnp.zeros(2)}
  np.testing.assert_array_equal(np.asarray(dist.align_gradients(g, zero)["w"]), [1.0, -2.0])
  np.testing.assert_array_equal(
    np.asarray(jax.jit(dist.align_gradients)(g, {"w": jnp.array([0.0, 1.0])})["w"]), [1.0, 0.0]
  )


def test_step_aligned_update_has_no_conflict():
  """``dual_head.step`` with ``align=True`` descends along g_ce + PCGrad(g_d), checked with plain SGD."""
  model = dh.DualHeadMLP(hidden=(8,), num_classes=4)
  x = jnp.asarray(RNG.normal(size=(16, 5)), jnp.float32)
  y = jnp.asarray(RNG.integers(0, 4, 16))
  teacher = jnp.asarray(RNG.normal(size=(16, 4)) * 4, jnp.float32)
  opt = optax.sgd(1.0)
  state = dh.init(jax.random.key(1), model, x, opt)
  objective = dh.single_head_objective(dist.binary_kl)

  def term(p, i):
    return jnp.mean(objective(model.apply(p, x), y, teacher)[i])

  g_ce, g_d = jax.grad(term)(state.params, 0), jax.grad(term)(state.params, 1)
  expected = _flat(g_ce) + _flat(dist.align_gradients(g_d, g_ce))
  new, info = dh.step(state, x, y, teacher, model=model, optimizer=opt, objective=objective, align=True)
  np.testing.assert_allclose(_flat(state.params) - _flat(new.params), expected, rtol=1e-5, atol=1e-6)
  assert (_flat(state.params) - _flat(new.params)) @ _flat(g_ce) > 0
  np.testing.assert_allclose(float(info.distillation), float(term(state.params, 1)), rtol=1e-6)


@pytest.mark.parametrize(
  "call, error, match",
  [
    (lambda: dist.binary_kl_norm(Z_S, Z_T[:, :3]), ValueError, "same shape"),
    (lambda: dist.binary_kl_norm(Z_S, Z_T, temperature=0.0), ValueError, "temperature"),
    (lambda: dist.kd_loss(Z_S, Z_T, temperature=-1), ValueError, "temperature"),
    (lambda: dist.binary_kl(np.ones((2, 3), np.int32), Z_T[:2, :3]), TypeError, "student_logits"),
    (lambda: dist.kd_loss(jnp.float32(1.0), jnp.float32(1.0)), ValueError, "class"),
    (lambda: dist.dual_head_terms(Z_S, Z_S[:, :3], np.zeros(6, int), Z_T[:, :3]), ValueError, "aux_logits"),
    (lambda: dist.dual_head_terms(Z_S, Z_S, np.zeros(6), Z_T), TypeError, "labels"),
    (lambda: dist.dual_head_terms(Z_S, Z_S, np.zeros(5, int), Z_T), ValueError, "labels"),
    # A class id outside [0, C) gave a NaN loss.
    (lambda: dist.dual_head_terms(Z_S, Z_S, np.full(6, 12), Z_T), ValueError, r"`labels` must lie in \[0, "),
    (lambda: dist.dual_head_loss(Z_S, Z_S, np.full(6, -1), Z_T), ValueError, r"`labels` must lie in \[0, "),
    (lambda: dist.align_gradients({"a": jnp.ones(2)}, {"b": jnp.ones(2)}), ValueError, "same structure"),
    (lambda: dist.align_gradients({"a": jnp.ones(2)}, {"a": jnp.ones(3)}), ValueError, "equal shapes"),
  ],
)
def test_bad_input(call, error, match):
  with pytest.raises(error, match=match):
    call()
