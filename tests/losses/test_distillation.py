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


@pytest.mark.parametrize(
  "student, teacher, temperature, error, match",
  [
    (Z_S, Z_T[:, :3], 2.0, ValueError, "`student_logits` and `teacher_logits` must have the same shape"),
    (np.ones((6, 7), np.int32), Z_T, 2.0, TypeError, "`student_logits`"),
    (Z_S, np.ones((6, 7), np.int32), 2.0, TypeError, "`teacher_logits`"),
    (np.float32(1.0), np.float32(1.0), 2.0, ValueError, "`student_logits`"),
    (Z_S, Z_T, 0.0, ValueError, "`temperature`"),
    (Z_S, Z_T, -1, ValueError, "`temperature`"),
    (Z_S, Z_T, float("nan"), ValueError, "`temperature`"),
    (Z_S, Z_T, float("inf"), ValueError, "`temperature`"),
    (Z_S, Z_T, np.ones(2), ValueError, "`temperature`"),
    (Z_S, Z_T, True, TypeError, "`temperature`"),
  ],
)
def test_logit_losses_bad_input(student, teacher, temperature, error, match):
  with pytest.raises(error, match=match):
    dist.kd_loss(student, teacher, temperature=temperature)
  with pytest.raises(error, match=match):
    dist.binary_kl(student, teacher, temperature=temperature)
  with pytest.raises(error, match=match):
    dist.binary_kl_norm(student, teacher, temperature=temperature)


def test_logit_losses_take_any_concrete_scalar_temperature():
  for fn in (dist.kd_loss, dist.binary_kl, dist.binary_kl_norm):
    expected = np.asarray(fn(Z_S, Z_T, temperature=2.0))
    for temperature in (np.float32(2.0), np.int64(2), jnp.float32(2.0)):
      np.testing.assert_allclose(np.asarray(fn(Z_S, Z_T, temperature=temperature)), expected, rtol=1e-6)


LABELS = np.arange(6) % 7


@pytest.mark.parametrize(
  "logits, aux, labels, teacher, options, error, match",
  [
    (Z_S.astype(np.int32), Z_S, LABELS, Z_T, {}, TypeError, "`logits`"),
    (Z_S, Z_S[:, :3], LABELS, Z_T[:, :3], {}, ValueError, "`logits` and `aux_logits`"),
    (Z_S, Z_S, LABELS, Z_T[:, :3], {}, ValueError, "`student_logits` and `teacher_logits`"),
    (Z_S, Z_S, LABELS.astype(np.float32), Z_T, {}, TypeError, "`labels`"),
    (Z_S, Z_S, LABELS[:5], Z_T, {}, ValueError, "`labels`"),
    (Z_S, Z_S, np.full(6, 7), Z_T, {}, ValueError, r"`labels` must lie in \[0, 7\)"),
    (Z_S, Z_S, np.full(6, -1), Z_T, {}, ValueError, r"`labels` must lie in \[0, 7\)"),
    (Z_S, Z_S, LABELS, Z_T, {"logit_loss": "binary_kl_norm"}, TypeError, "`logit_loss`"),
  ],
)
def test_dual_head_terms_and_loss_bad_input(logits, aux, labels, teacher, options, error, match):
  with pytest.raises(error, match=match):
    dist.dual_head_terms(logits, aux, labels, teacher, **options)
  with pytest.raises(error, match=match):
    dist.dual_head_loss(logits, aux, labels, teacher, **options)


@pytest.mark.parametrize(
  "weights, error, match",
  [
    ({"ce_weight": -1.0}, ValueError, "`ce_weight`"),
    ({"distillation_weight": float("nan")}, ValueError, "`distillation_weight`"),
    ({"distillation_weight": np.ones(2)}, TypeError, "`distillation_weight`"),
    ({"ce_weight": "1"}, TypeError, "`ce_weight`"),
  ],
)
def test_dual_head_loss_bad_weights(weights, error, match):
  with pytest.raises(error, match=match):
    dist.dual_head_loss(Z_S, Z_S, LABELS, Z_T, **weights)


@pytest.mark.parametrize(
  "distillation_grads, ce_grads, match",
  [
    ({"a": jnp.ones(2)}, {"b": jnp.ones(2)}, "`distillation_grads` and `ce_grads` must be pytrees of the same"),
    ({"a": jnp.ones(2)}, {"a": jnp.ones(3)}, "`distillation_grads` and `ce_grads` leaves must have equal shapes"),
    ({}, {}, "`ce_grads` must have at least one leaf"),
  ],
)
def test_align_gradients_bad_input(distillation_grads, ce_grads, match):
  with pytest.raises(ValueError, match=match):
    dist.align_gradients(distillation_grads, ce_grads)


# ----------------------------------------------------------------------------------------------------------------
# The dual-head student's training functions


def _student(num=8):
  model = dh.DualHeadMLP(hidden=(8,), num_classes=4)
  x = jnp.asarray(RNG.normal(size=(num, 5)), jnp.float32)
  y = jnp.asarray(np.arange(num) % 4)
  teacher = jnp.asarray(RNG.normal(size=(num, 4)), jnp.float32)
  return model, x, y, teacher


def test_dual_head_objectives_bad_input():
  with pytest.raises(TypeError, match="`distillation_loss`"):
    dh.single_head_objective("kd")
  with pytest.raises(TypeError, match="`logit_loss`"):
    dh.dual_head_objective(None)


def test_dual_head_init_bad_input():
  model, x, _, _ = _student()
  with pytest.raises(TypeError, match="`optimizer`"):
    dh.init(jax.random.key(0), model, x, "sgd")
  with pytest.raises(TypeError, match="`model`"):
    dh.init(jax.random.key(0), lambda x: x, x, optax.sgd(0.1))
  with pytest.raises(ValueError, match="`x`"):
    dh.init(jax.random.key(0), model, x[0], optax.sgd(0.1))


@pytest.mark.parametrize(
  "change, error, match",
  [
    ({"x": jnp.ones(8)}, ValueError, "`x`"),
    ({"labels": jnp.zeros(7, jnp.int32)}, ValueError, "`labels`"),
    ({"labels": jnp.zeros((8, 1), jnp.int32)}, ValueError, "`labels`"),
    ({"labels": jnp.zeros(8)}, TypeError, "`labels`"),
    # An id outside [0, C) gave a NaN cross-entropy (or a wrapped-around class's).
    ({"labels": jnp.full(8, 4)}, ValueError, r"`labels` must lie in \[0, 4\)"),
    ({"teacher_logits": jnp.zeros((7, 4))}, ValueError, "`teacher_logits`"),
    ({"teacher_logits": jnp.zeros(8)}, ValueError, "`teacher_logits`"),
    ({"teacher_logits": jnp.zeros((8, 4), jnp.int32)}, TypeError, "`teacher_logits`"),
    ({"objective": None}, TypeError, "`objective`"),
    ({"optimizer": "sgd"}, TypeError, "`optimizer`"),
    ({"ce_weight": -1.0}, ValueError, "`ce_weight`"),
    ({"distillation_weight": float("inf")}, ValueError, "`distillation_weight`"),
    ({"align": 1}, TypeError, "`align`"),
  ],
)
def test_dual_head_step_and_train_bad_input(change, error, match):
  model, x, y, teacher = _student()
  opt = optax.sgd(0.1)
  state = dh.init(jax.random.key(0), model, x, opt)
  data = {"x": x, "labels": y, "teacher_logits": teacher}
  options = {"model": model, "optimizer": opt, "objective": dh.dual_head_objective()}
  data.update((k, v) for k, v in change.items() if k in data)
  options.update((k, v) for k, v in change.items() if k not in data)
  with pytest.raises(error, match=match):
    dh.step(state, **data, **options)
  with pytest.raises(error, match=match):
    dh.train(jax.random.key(1), **data, **options, num_epochs=1, batch_size=4)


@pytest.mark.parametrize(
  "options, match",
  [
    ({"num_epochs": 0, "batch_size": 4}, "`num_epochs`"),
    ({"num_epochs": 1, "batch_size": 0}, "`batch_size`"),
    ({"num_epochs": 1, "batch_size": 9}, "`batch_size`"),
    ({"num_epochs": 1.0, "batch_size": 4}, "`num_epochs`"),
    ({"num_epochs": True, "batch_size": 4}, "`num_epochs`"),
  ],
)
def test_dual_head_train_bad_counts(options, match):
  model, x, y, teacher = _student()
  with pytest.raises(ValueError, match=match):
    dh.train(
      jax.random.key(0),
      x,
      y,
      teacher,
      model=model,
      optimizer=optax.sgd(0.1),
      objective=dh.dual_head_objective(),
      **options,
    )


def test_dual_head_accuracy_bad_input():
  model, x, y, _ = _student()
  params = model.init(jax.random.key(0), x)
  assert 0.0 <= float(dh.accuracy(model, params, x, y)) <= 1.0
  # A (num, 1) label column broadcast against the (num,) predictions into a (num, num) table without a word.
  with pytest.raises(ValueError, match="`labels` must have shape"):
    dh.accuracy(model, params, x, y[:, None])
  with pytest.raises(ValueError, match="`labels`"):
    dh.accuracy(model, params, x, y[:5])
  with pytest.raises(TypeError, match="`labels`"):
    dh.accuracy(model, params, x, y.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 4\)"):
    dh.accuracy(model, params, x, y.at[0].set(4))
  with pytest.raises(ValueError, match="`x`"):
    dh.accuracy(model, params, x[0], y[:1])
