"""DPO, IPO and hinge losses against their closed forms, autodiff against the DPO gradient, and sequence
log-probabilities against a numpy loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.losses import preference
from toolkit.losses.preference import (
  dpo_loss,
  hinge_loss,
  implicit_reward_margin,
  implicit_rewards,
  ipo_loss,
  sequence_log_probs,
  token_log_probs,
)

LOSSES = [dpo_loss, ipo_loss, hinge_loss]


def _log_probs(key, shape=(5,)):
  return tuple(-jnp.abs(3 * jax.random.normal(k, shape)) for k in jax.random.split(key, 4))


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 3.0])
def test_losses_at_initialisation_policy_equals_reference(beta, key):
  # π_θ = π_ref makes h = 0 whatever the log-probabilities are.
  chosen, rejected = _log_probs(key)[:2]
  args = (chosen, rejected, chosen, rejected)
  np.testing.assert_allclose(dpo_loss(*args, beta=beta), np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(ipo_loss(*args, beta=beta), 1 / (4 * beta**2), rtol=1e-5)
  np.testing.assert_allclose(hinge_loss(*args, beta=beta), 1.0)


@settings(deadline=None, max_examples=12)
@given(
  st.lists(st.floats(-30, 30), min_size=4, max_size=4),
  st.floats(0.01, 5.0),
)
def test_losses_match_numpy_formulas_of_the_margin(values, beta):
  pc, pr, rc, rr = (np.float64(v) for v in values)
  h = (pc - rc) - (pr - rr)
  args = tuple(jnp.array([v], jnp.float32) for v in values)
  np.testing.assert_allclose(dpo_loss(*args, beta=beta)[0], np.logaddexp(0.0, -beta * h), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ipo_loss(*args, beta=beta)[0], (h - 1 / (2 * beta)) ** 2, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(hinge_loss(*args, beta=beta)[0], max(0.0, 1 - beta * h), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(implicit_reward_margin(*args)[0], h, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_gradient_in_the_margin_is_minus_beta_sigmoid(beta):
  h = jnp.linspace(-20.0, 20.0, 41)
  zeros = jnp.zeros_like(h)
  # h enters as the policy's chosen log-probability, every other term zero.
  grad = jax.vmap(jax.grad(lambda h: dpo_loss(h, 0.0 * h, 0.0 * h, 0.0 * h, beta=beta)))(h)
  np.testing.assert_allclose(grad, -beta * jax.nn.sigmoid(-beta * h), rtol=1e-5, atol=1e-7)
  # The same through the rejected side with the opposite sign, and through the reference.
  grad_rejected = jax.grad(lambda x: jnp.sum(dpo_loss(zeros, x, zeros, zeros, beta=beta)))(-h)
  np.testing.assert_allclose(grad_rejected, beta * jax.nn.sigmoid(-beta * h), rtol=1e-5, atol=1e-7)


def test_ipo_minimiser_and_hinge_zero_region():
  beta = 0.25
  h = jnp.array([1 / (2 * beta)])
  zero = jnp.zeros(1)
  assert float(ipo_loss(h, zero, zero, zero, beta=beta)[0]) == 0.0
  assert float(jax.grad(lambda x: ipo_loss(x, zero, zero, zero, beta=beta)[0])(h)[0]) == 0.0
  # The hinge is flat (zero loss, zero gradient) once β h ≥ 1.
  big = jnp.array([5.0])
  assert float(hinge_loss(big, zero, zero, zero, beta=beta)[0]) == 0.0
  assert float(jax.grad(lambda x: hinge_loss(x, zero, zero, zero, beta=beta)[0])(big)[0]) == 0.0


def test_dpo_is_stable_for_large_margins():
  h = jnp.array([-1e4, 1e4])
  zero = jnp.zeros(2)
  loss = dpo_loss(h, zero, zero, zero, beta=1.0)
  np.testing.assert_allclose(loss, [1e4, 0.0], rtol=1e-6)
  assert np.all(np.isfinite(jax.grad(lambda x: jnp.sum(dpo_loss(x, zero, zero, zero, beta=1.0)))(h)))


def test_implicit_rewards_difference_is_beta_margin(key):
  pc, pr, rc, rr = _log_probs(key)
  diff = implicit_rewards(pc, rc, beta=0.3) - implicit_rewards(pr, rr, beta=0.3)
  np.testing.assert_allclose(diff, 0.3 * implicit_reward_margin(pc, pr, rc, rr), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_work_under_jit_with_a_traced_beta_and_under_vmap(loss, key):
  args = _log_probs(key, (3, 4))
  eager = loss(*args, beta=0.5)
  jitted = jax.jit(lambda b, *a: loss(*a, beta=b))(0.5, *args)
  np.testing.assert_allclose(eager, jitted, rtol=1e-6)
  mapped = jax.vmap(functools.partial(loss, beta=0.5))(*args)
  np.testing.assert_allclose(eager, mapped, rtol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_refuse_bad_input(loss, key):
  args = _log_probs(key)
  with pytest.raises(ValueError, match="beta"):
    loss(*args, beta=-0.1)
  with pytest.raises(ValueError, match="beta"):
    loss(*args, beta=0.0)
  with pytest.raises(ValueError, match="same shape"):
    loss(args[0], args[1][:3], args[2], args[3], beta=0.1)
  with pytest.raises(TypeError, match="policy_chosen"):
    loss(jnp.zeros(5, jnp.int32), *args[1:], beta=0.1)


@pytest.mark.parametrize(
  "change, error, match",
  [
    ({"beta": 0.0}, ValueError, "`beta`"),
    ({"beta": float("nan")}, ValueError, "`beta`"),
    ({"beta": jnp.ones(2)}, ValueError, "`beta`"),
    ({"beta": "0.1"}, TypeError, "`beta`"),
    ({"policy_rejected": jnp.zeros(3)}, ValueError, "`policy_rejected` must have the same shape"),
    ({"reference_chosen": jnp.zeros((5, 1))}, ValueError, "`reference_chosen`"),
    ({"reference_rejected": jnp.zeros(5, jnp.int32)}, TypeError, "`reference_rejected`"),
  ],
)
def test_losses_bad_input_by_name(change, error, match, key):
  args = dict(zip(("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected"), _log_probs(key)))
  kwargs = {**args, "beta": 0.1, **change}
  with pytest.raises(error, match=match):
    preference.dpo_loss(**kwargs)
  with pytest.raises(error, match=match):
    preference.ipo_loss(**kwargs)
  with pytest.raises(error, match=match):
    preference.hinge_loss(**kwargs)
  if "beta" not in change:
    del kwargs["beta"]
    with pytest.raises(error, match=match):
      preference.implicit_reward_margin(**kwargs)


@pytest.mark.parametrize(
  "policy, reference, beta, error, match",
  [
    (jnp.zeros(3), jnp.zeros(3), -1.0, ValueError, "`beta`"),
    (jnp.zeros(3), jnp.zeros(3), float("inf"), ValueError, "`beta`"),
    (jnp.zeros(3), jnp.zeros(4), 0.1, ValueError, "`policy` and `reference`"),
    (jnp.zeros(3, jnp.int32), jnp.zeros(3), 0.1, TypeError, "`policy`"),
    (jnp.zeros(3), jnp.zeros(3, bool), 0.1, TypeError, "`reference`"),
  ],
)
def test_implicit_rewards_bad_input(policy, reference, beta, error, match):
  with pytest.raises(error, match=match):
    preference.implicit_rewards(policy, reference, beta=beta)


def _np_sequence_log_probs(logits, tokens, mask):
  logits = np.asarray(logits, np.float64)
  out = np.zeros(tokens.shape[0])
  for b in range(tokens.shape[0]):
    for t in range(tokens.shape[1]):
      if mask[b, t]:
        row = logits[b, t]
        out[b] += row[tokens[b, t]] - np.log(np.sum(np.exp(row - row.max()))) - row.max()
  return out


def test_sequence_log_probs_matches_a_loop_and_ignores_masked_positions(key):
  k1, k2, _k3 = jax.random.split(key, 3)
  logits = 2 * jax.random.normal(k1, (3, 6, 5))
  tokens = jax.random.randint(k2, (3, 6), 0, 5)
  mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
  got = sequence_log_probs(logits, tokens, mask)
  np.testing.assert_allclose(got, _np_sequence_log_probs(logits, np.asarray(tokens), mask), rtol=1e-5, atol=1e-5)
  assert float(got[2]) == 0.0
  # Garbage (even −inf logits) at masked positions changes nothing: variable lengths share one padded array.
  poisoned = logits.at[0, 5].set(-jnp.inf).at[1, 0].set(jnp.nan)
  np.testing.assert_allclose(sequence_log_probs(poisoned, tokens, mask), got, rtol=1e-6)
  # A bool mask gives the same.
  np.testing.assert_allclose(sequence_log_probs(logits, tokens, mask.astype(bool)), got, rtol=1e-6)


def test_sequence_log_probs_keeps_dtype_and_refuses_bad_input(key):
  logits = jax.random.normal(key, (2, 4, 3)).astype(jnp.bfloat16)
  tokens = jnp.zeros((2, 4), jnp.int32)
  assert sequence_log_probs(logits, tokens, jnp.ones((2, 4))).dtype == jnp.bfloat16
  assert token_log_probs(logits, tokens).shape == (2, 4)
  with pytest.raises(ValueError, match="mask"):
    sequence_log_probs(logits, tokens, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="tokens"):
    sequence_log_probs(logits, tokens[:, :3], jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="tokens"):
    sequence_log_probs(logits, tokens.astype(jnp.float32), jnp.ones((2, 4)))
  # An id outside [0, V) gave NaN (too large) or a wrapped-around token's log-probability (negative).
  for bad in (3, -1):
    with pytest.raises(ValueError, match=r"`tokens` must lie in \[0, 3\)"):
      token_log_probs(logits, tokens.at[1, 2].set(bad))


def test_module_exports():
  assert set(preference.__all__) >= {"dpo_loss", "ipo_loss", "hinge_loss", "sequence_log_probs"}
