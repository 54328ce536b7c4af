"""SFT and DAA steps of the small transformer against hand-written gradients, and sampling against teacher forcing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.alignment import preference_training as pt
from toolkit.losses.preference import dpo_loss, hinge_loss, ipo_loss
from toolkit.models import transformer

CONFIG = transformer.TransformerConfig(vocab_size=7, d_model=16, num_heads=1, num_layers=1, max_len=12)
APPLY = transformer.Transformer(CONFIG).apply


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(jax.random.key(1), CONFIG)


def _batch(key, b=3, t=6):
  k1, k2 = jax.random.split(key)
  chosen = jax.random.randint(k1, (b, t), 0, 7)
  rejected = chosen.at[:, 3:].set(jax.random.randint(k2, (b, t - 3), 0, 7))
  mask = jnp.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0]])[:b]
  return pt.PreferenceBatch(chosen, mask, rejected, mask)


def test_response_log_probs_is_the_masked_sum_of_teacher_forced_log_probs(params, key):
  batch = _batch(key)
  per_token = transformer.sequence_log_probs(params, CONFIG, batch.chosen)  # (B, T − 1), targets tokens[:, 1:]
  expected = jnp.sum(per_token * batch.chosen_mask[:, 1:], axis=1)
  np.testing.assert_allclose(pt.response_log_probs(APPLY, params, batch.chosen, batch.chosen_mask), expected, rtol=1e-5)


@pytest.mark.parametrize(
  "loss_fn, at_init",
  [
    (dpo_loss, np.log(2.0)),
    pytest.param(ipo_loss, 1 / (4 * 0.5**2), marks=pytest.mark.slow),
    pytest.param(hinge_loss, 1.0, marks=pytest.mark.slow),
  ],
)
def test_first_step_at_the_reference_gives_the_closed_form_loss(params, key, loss_fn, at_init):
  optimizer = optax.sgd(0.1)
  state = pt.init(params, optimizer)
  _, info = pt.preference_step(state, _batch(key), apply_fn=APPLY, optimizer=optimizer, loss_fn=loss_fn, beta=0.5)
  np.testing.assert_allclose(info.loss, at_init, rtol=1e-5)
  np.testing.assert_allclose(info.margin, 0.0, atol=1e-6)
  np.testing.assert_allclose(info.policy_chosen, info.reference_chosen)


def test_dpo_step_gradient_is_minus_beta_sigmoid_times_the_log_prob_gradients(params, key):
  # Move the policy away from the reference first, so that h ≠ 0 and the weight σ(−β h) is not 1/2.
  batch, beta, lr = _batch(key), 0.7, 0.05
  reference = params
  policy = jax.tree.map(lambda w: w + 0.05 * jax.random.normal(jax.random.key(3), w.shape), params)
  optimizer = optax.sgd(lr)
  state = pt.init(policy, optimizer, reference_params=reference)
  new_state, info = pt.preference_step(state, batch, apply_fn=APPLY, optimizer=optimizer, loss_fn=dpo_loss, beta=beta)
  # Closed form: ∇ mean ℓ = mean_b −β σ(−β h_b) (∇ log π(y_w,b) − ∇ log π(y_l,b)).
  logp = lambda p, toks, m: pt.response_log_probs(APPLY, p, toks, m)
  h = info.margin
  weights = -beta * jax.nn.sigmoid(-beta * h) / h.shape[0]
  surrogate = lambda p: jnp.sum(
    weights * (logp(p, batch.chosen, batch.chosen_mask) - logp(p, batch.rejected, batch.rejected_mask))
  )
  grads = jax.grad(surrogate)(policy)
  expected = jax.tree.map(lambda w, g: w - lr * g, policy, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_state.params, expected)
  assert int(new_state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, new_state.reference_params, reference)


def test_sft_step_follows_the_nll_gradient_and_lowers_it(params, key):
  batch = _batch(key)
  sft = pt.SFTBatch(batch.chosen, batch.chosen_mask)
  optimizer = optax.sgd(0.5)
  state = pt.init(params, optimizer)
  step = jax.jit(functools.partial(pt.sft_step, apply_fn=APPLY, optimizer=optimizer))
  nll = lambda p: -jnp.sum(pt.response_log_probs(APPLY, p, sft.tokens, sft.mask)) / jnp.sum(sft.mask[:, 1:])
  new_state, info = step(state, sft)
  np.testing.assert_allclose(info.loss, nll(params), rtol=1e-5)
  expected = jax.tree.map(lambda w, g: w - 0.5 * g, params, jax.grad(nll)(params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_state.params, expected)
  for _ in range(20):
    new_state, _ = step(new_state, sft)
  assert nll(new_state.params) < 0.5 * nll(params)


@pytest.mark.slow
def test_jitted_steps_equal_unjitted_steps_and_nll_weight_adds_the_sft_term(params, key):
  batch = _batch(key)
  optimizer = optax.adam(1e-2)
  kwargs = {"apply_fn": APPLY, "optimizer": optimizer, "loss_fn": dpo_loss}
  jitted = jax.jit(functools.partial(pt.preference_step, **kwargs))
  state_a = state_b = pt.init(params, optimizer)
  for _ in range(3):
    state_a, info_a = pt.preference_step(state_a, batch, beta=0.1, **kwargs)
    state_b, info_b = jitted(state_b, batch, beta=0.1)
  np.testing.assert_allclose(info_a.margin, info_b.margin, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(info_a.loss, info_b.loss, rtol=1e-5)
  _, info_nll = pt.preference_step(state_a, batch, beta=0.1, nll_weight=2.0, **kwargs)
  nll = -jnp.sum(info_nll.policy_chosen) / jnp.sum(batch.chosen_mask[:, 1:])
  np.testing.assert_allclose(info_nll.loss, jnp.mean(dpo_loss(*info_nll[2:6], beta=0.1)) + 2.0 * nll, rtol=1e-5)


def test_steps_refuse_bad_input(params, key):
  batch = _batch(key)
  optimizer = optax.sgd(0.1)
  state = pt.init(params, optimizer)
  kwargs = {"apply_fn": APPLY, "optimizer": optimizer, "loss_fn": dpo_loss, "beta": 0.1}
  with pytest.raises(ValueError, match="same number of pairs"):
    pt.preference_step(
      state, batch._replace(rejected=batch.rejected[:2], rejected_mask=batch.rejected_mask[:2]), **kwargs
    )
  with pytest.raises(ValueError, match="mask"):
    pt.preference_step(state, batch._replace(chosen_mask=batch.chosen_mask[:, :4]), **kwargs)
  with pytest.raises(TypeError, match="batch.chosen"):
    pt.preference_step(state, batch._replace(chosen=batch.chosen.astype(jnp.float32)), **kwargs)
  with pytest.raises(ValueError, match="beta"):
    pt.preference_step(state, batch, **{**kwargs, "beta": -1.0})
  with pytest.raises(TypeError, match="optimizer"):
    pt.init(params, "adam")


def test_response_log_probs_bad_input(params, key):
  batch = _batch(key)
  tokens, mask = batch.chosen, batch.chosen_mask
  with pytest.raises(TypeError, match="`tokens`"):
    pt.response_log_probs(APPLY, params, tokens.astype(jnp.float32), mask)
  with pytest.raises(ValueError, match="`tokens` must have shape"):
    pt.response_log_probs(APPLY, params, tokens[:, :1], mask[:, :1])
  with pytest.raises(ValueError, match="`tokens` must have shape"):
    pt.response_log_probs(APPLY, params, tokens[0], mask[0])
  with pytest.raises(ValueError, match="`mask` must have the shape of `tokens`"):
    pt.response_log_probs(APPLY, params, tokens, mask[:, :4])
  with pytest.raises(TypeError, match="`apply_fn`"):
    pt.response_log_probs(None, params, tokens, mask)
  # An id outside [0, V) read a NaN embedding row (or a wrapped-around token's); the model refuses it.
  with pytest.raises(ValueError, match=r"`tokens` must lie in \[0, 7\)"):
    pt.response_log_probs(APPLY, params, tokens.at[0, 1].set(7), mask)


def test_sft_step_bad_input(params, key):
  batch = _batch(key)
  sft = pt.SFTBatch(batch.chosen, batch.chosen_mask)
  optimizer = optax.sgd(0.1)
  state = pt.init(params, optimizer)
  kwargs = {"apply_fn": APPLY, "optimizer": optimizer}
  with pytest.raises(TypeError, match="`batch.tokens`"):
    pt.sft_step(state, sft._replace(tokens=sft.tokens.astype(jnp.float32)), **kwargs)
  with pytest.raises(ValueError, match="`batch.tokens` must have shape"):
    pt.sft_step(state, pt.SFTBatch(sft.tokens[:, :1], sft.mask[:, :1]), **kwargs)
  with pytest.raises(ValueError, match="`batch.mask` must have the shape of `batch.tokens`"):
    pt.sft_step(state, sft._replace(mask=sft.mask[:2]), **kwargs)
  with pytest.raises(TypeError, match="`batch`"):
    pt.sft_step(state, batch, **kwargs)
  with pytest.raises(TypeError, match="`optimizer`"):
    pt.sft_step(state, sft, apply_fn=APPLY, optimizer="sgd")
  with pytest.raises(TypeError, match="`apply_fn`"):
    pt.sft_step(state, sft, apply_fn="transformer", optimizer=optimizer)


@pytest.mark.slow
def test_sampled_logits_are_the_teacher_forced_logits_and_cold_sampling_is_greedy(params, key):
  prompts = jnp.array([[1, 2, 3], [4, 5, 6]])
  out = pt.sample_responses(key, APPLY, params, prompts, num_new_tokens=4)
  assert out.tokens.shape == (2, 7) and out.logits.shape == (2, 4, 7)
  np.testing.assert_array_equal(out.tokens[:, :3], prompts)
  forced = APPLY(params, out.tokens)[:, 2:6]
  np.testing.assert_allclose(out.logits, forced, rtol=1e-5, atol=1e-5)
  cold = pt.sample_responses(key, APPLY, params, prompts, num_new_tokens=4, temperature=1e-6)
  np.testing.assert_array_equal(cold.tokens[:, 3:], jnp.argmax(cold.logits, axis=-1))
  with pytest.raises(ValueError, match="num_new_tokens"):
    pt.sample_responses(key, APPLY, params, prompts, num_new_tokens=0)
  with pytest.raises(ValueError, match="temperature"):
    pt.sample_responses(key, APPLY, params, prompts, num_new_tokens=2, temperature=0.0)


@pytest.mark.slow
def test_sampling_frequencies_match_the_model_distribution(params):
  # One new token from many copies of one prompt: the empirical frequencies are the softmax of the logits.
  prompts = jnp.tile(jnp.array([[1, 2]]), (4000, 1))
  out = pt.sample_responses(jax.random.key(5), APPLY, params, prompts, num_new_tokens=1, temperature=0.5)
  p = jax.nn.softmax(out.logits[0, 0] / 0.5)
  freq = np.bincount(np.asarray(out.tokens[:, 2]), minlength=7) / 4000
  np.testing.assert_allclose(freq, p, atol=0.03)
