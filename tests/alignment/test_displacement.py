"""CHES, its filter, and the linear toy's closed-form log-probability rate against oracles (arXiv 2410.08847)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.alignment import displacement as ld
from toolkit.models.transformer import Transformer, TransformerConfig, init_params

# ----------------------------------------------------------------------------------------------------------------
# CHES


def _random_pair(seed, batch=5, positions=(7, 9), features=6):
  rng = np.random.default_rng(seed)
  h_pos = rng.normal(size=(batch, positions[0], features)).astype(np.float32)
  h_neg = rng.normal(size=(batch, positions[1], features)).astype(np.float32)
  m_pos = (rng.random((batch, positions[0])) < 0.6).astype(np.float32)
  m_neg = (rng.random((batch, positions[1])) < 0.6).astype(np.float32)
  m_pos[:, 0] = m_neg[:, 0] = 1.0  # at least one response position each
  return h_pos, h_neg, m_pos, m_neg


def _ches_loop(h_pos, h_neg, m_pos, m_neg, normalized):
  """The definition written out example by example, position by position, in float64."""
  out = []
  for b in range(h_pos.shape[0]):
    s_pos = sum(np.float64(h_pos[b, p]) for p in range(h_pos.shape[1]) if m_pos[b, p])
    s_neg = sum(np.float64(h_neg[b, p]) for p in range(h_neg.shape[1]) if m_neg[b, p])
    n_pos, n_neg = m_pos[b].sum(), m_neg[b].sum()
    if normalized:
      out.append(s_pos @ s_neg / (n_pos * n_neg) - s_pos @ s_pos / n_pos**2)
    else:
      out.append(s_pos @ s_neg - s_pos @ s_pos)
  return np.array(out)


@pytest.mark.parametrize("normalized", [False, True])
def test_ches_matches_loop_with_variable_lengths(normalized):
  h_pos, h_neg, m_pos, m_neg = _random_pair(0)
  got = ld.ches_score(h_pos, h_neg, m_pos, m_neg, length_normalized=normalized)
  np.testing.assert_allclose(got, _ches_loop(h_pos, h_neg, m_pos, m_neg, normalized), rtol=1e-5, atol=1e-4)


def test_ches_of_identical_responses_is_zero():
  h_pos, _, m_pos, _ = _random_pair(1)
  for normalized in (False, True):
    np.testing.assert_allclose(ld.ches_score(h_pos, h_pos, m_pos, m_pos, length_normalized=normalized), 0.0, atol=1e-4)


def test_ches_of_orthogonal_sums_is_minus_norm_squared():
  rng = np.random.default_rng(2)
  # Chosen hidden states live in the first 3 features, rejected ones in the last 3: S⁻ ⊥ S⁺.
  h_pos = np.concatenate([rng.normal(size=(4, 5, 3)), np.zeros((4, 5, 3))], -1).astype(np.float32)
  h_neg = np.concatenate([np.zeros((4, 6, 3)), rng.normal(size=(4, 6, 3))], -1).astype(np.float32)
  m_pos, m_neg = np.ones((4, 5)), np.ones((4, 6))
  s_pos = h_pos.sum(1)
  np.testing.assert_allclose(ld.ches_score(h_pos, h_neg, m_pos, m_neg), -np.sum(s_pos**2, -1), rtol=1e-5)


def test_length_normalized_is_ches_over_squared_length_at_equal_lengths():
  rng = np.random.default_rng(3)
  h_pos, h_neg = rng.normal(size=(2, 6, 8, 4)).astype(np.float32)
  lengths = np.array([1, 3, 5, 8, 2, 7])
  mask = (np.arange(8) < lengths[:, None]).astype(np.float32)
  # The same length, but at different positions for the rejected response: only the counts matter.
  mask_neg = mask[:, ::-1].copy()
  ches = ld.ches_score(h_pos, h_neg, mask, mask_neg)
  ln = ld.ches_score(h_pos, h_neg, mask, mask_neg, length_normalized=True)
  np.testing.assert_allclose(ln, ches / lengths**2, rtol=1e-5, atol=1e-6)


def test_padding_values_are_ignored_and_masks_of_any_dtype():
  h_pos, h_neg, m_pos, m_neg = _random_pair(4)
  garbage_pos = np.where(m_pos[..., None] > 0, h_pos, 1e3).astype(np.float32)
  np.testing.assert_allclose(
    ld.ches_score(garbage_pos, h_neg, m_pos.astype(bool), m_neg.astype(np.int32)),
    ld.ches_score(h_pos, h_neg, m_pos, m_neg),
    rtol=1e-5,
  )


def test_mask_helper_reproduces_the_authors_slicing():
  """The authors' code zeroes positions before the last prompt token and drops the last position of [x, y]."""
  rng = np.random.default_rng(5)
  prompt_lengths, response_lengths = np.array([1, 3, 4]), np.array([4, 2, 5])
  h_pos = rng.normal(size=(3, 10, 5)).astype(np.float32)
  h_neg = rng.normal(size=(3, 10, 5)).astype(np.float32)
  expected = []
  for b in range(3):
    p, r = prompt_lengths[b], response_lengths[b]
    s_pos = h_pos[b, p - 1 : p + r - 1].astype(np.float64).sum(0)  # [x, y⁺] has p + r tokens; drop the last
    s_neg = h_neg[b, p - 1 : p + r - 1].astype(np.float64).sum(0)
    expected.append(s_pos @ s_neg - s_pos @ s_pos)
  mask = ld.response_prediction_mask(jnp.asarray(prompt_lengths), jnp.asarray(response_lengths), 10)
  np.testing.assert_array_equal(mask.sum(-1), response_lengths)
  np.testing.assert_allclose(ld.ches_score(h_pos, h_neg, mask, mask), expected, rtol=1e-5, atol=1e-4)


def test_ches_jit_vmap_and_grad():
  h_pos, h_neg, m_pos, m_neg = _random_pair(6)
  eager = ld.ches_score(h_pos, h_neg, m_pos, m_neg, length_normalized=True)
  jitted = jax.jit(ld.ches_score, static_argnames="length_normalized")(
    h_pos, h_neg, m_pos, m_neg, length_normalized=True
  )
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  # vmap over a leading axis of single examples equals the batched call.
  single = lambda a, b, c, d: ld.ches_score(a[None], b[None], c[None], d[None])[0]
  np.testing.assert_allclose(
    jax.vmap(single)(h_pos, h_neg, m_pos, m_neg), ld.ches_score(h_pos, h_neg, m_pos, m_neg), rtol=1e-5
  )
  # ∂CHES/∂h⁻_p = S⁺ at every selected position p of the rejected response, 0 at padding.
  grad = jax.grad(lambda hn: ld.ches_score(h_pos, hn, m_pos, m_neg).sum())(jnp.asarray(h_neg))
  s_pos = np.einsum("bp,bpf->bf", m_pos, h_pos)
  np.testing.assert_allclose(grad, m_neg[..., None] * s_pos[:, None, :], rtol=1e-5, atol=1e-5)


def test_ches_bad_input():
  h_pos, h_neg, m_pos, m_neg = _random_pair(7)
  with pytest.raises(ValueError, match="mask_chosen"):
    ld.ches_score(h_pos, h_neg, m_pos[:, :-1], m_neg)
  with pytest.raises(ValueError, match="share their leading axes and features"):
    ld.ches_score(h_pos, h_neg[..., :-1], m_pos, m_neg)
  with pytest.raises(ValueError, match="share their leading axes"):
    ld.ches_score(h_pos, h_neg[:-1], m_pos, m_neg[:-1])
  with pytest.raises(TypeError, match="hidden_rejected"):
    ld.ches_score(h_pos, h_neg.astype(np.int32), m_pos, m_neg)
  with pytest.raises(ValueError, match="positions, features"):
    ld.ches_score(h_pos[0, 0], h_neg[0, 0], m_pos[0, :1], m_neg[0, :1])
  with pytest.raises(TypeError, match="length_normalized"):
    ld.ches_score(h_pos, h_neg, m_pos, m_neg, length_normalized=1)
  with pytest.raises(ValueError, match="num_positions"):
    ld.response_prediction_mask(jnp.array(1), jnp.array(1), 0)
  with pytest.raises(TypeError, match="prompt_lengths"):
    ld.response_prediction_mask(jnp.array(1.0), jnp.array(1), 4)


@pytest.mark.parametrize(
  "hidden, mask, error, match",
  [
    (np.ones((2, 3, 4), np.int32), np.ones((2, 3)), TypeError, "`hidden`"),
    (np.ones(4, np.float32), np.ones(()), ValueError, r"`hidden` must have shape \(\.\.\., positions, features\)"),
    (np.ones((2, 3, 4), np.float32), np.ones((2, 4)), ValueError, "`mask` must have shape"),
    (np.ones((2, 3, 4), np.float32), np.ones((2, 3), np.complex64), TypeError, "`mask`"),
  ],
)
def test_summed_hidden_states_bad_input(hidden, mask, error, match):
  with pytest.raises(error, match=match):
    ld.summed_hidden_states(hidden, mask)


# ----------------------------------------------------------------------------------------------------------------
# The filter


def test_lowest_ches_matches_numpy_sort():
  scores = np.random.default_rng(8).normal(size=37).astype(np.float32)
  for fraction in (0.05, 0.3, 1.0):
    out = ld.lowest_ches(jnp.asarray(scores), keep_fraction=fraction)
    k = max(1, round(fraction * 37))
    np.testing.assert_array_equal(out.indices, np.argsort(scores, kind="stable")[:k])
    assert out.keep.sum() == k and set(np.flatnonzero(out.keep)) == set(np.asarray(out.indices))
    assert float(out.threshold) == np.sort(scores)[k - 1]
    assert np.all(scores[~np.asarray(out.keep)] >= float(out.threshold))
  jitted = jax.jit(ld.lowest_ches, static_argnames="keep_fraction")(jnp.asarray(scores), keep_fraction=0.3)
  np.testing.assert_array_equal(jitted.indices, ld.lowest_ches(jnp.asarray(scores), keep_fraction=0.3).indices)


def test_lowest_ches_bad_input():
  with pytest.raises(ValueError, match="keep_fraction"):
    ld.lowest_ches(jnp.ones(4), keep_fraction=0.0)
  with pytest.raises(ValueError, match="keep_fraction"):
    ld.lowest_ches(jnp.ones(4), keep_fraction=1.5)
  with pytest.raises(ValueError, match="scores"):
    ld.lowest_ches(jnp.ones((2, 2)), keep_fraction=0.5)
  with pytest.raises(TypeError, match="scores"):
    ld.lowest_ches(jnp.ones(4, jnp.int32), keep_fraction=0.5)


# ----------------------------------------------------------------------------------------------------------------
# The transformer's hidden states


def test_transformer_hidden_states_feed_the_lm_head():
  config = TransformerConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=2, max_len=12)
  params = init_params(jax.random.key(1), config)
  tokens = jax.random.randint(jax.random.key(2), (3, 9), 0, 20)
  hidden, logits = ld.transformer_hidden_states(params, config, tokens)
  np.testing.assert_allclose(logits, Transformer(config).apply(params, tokens), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hidden @ params["params"]["lm_head"]["kernel"], logits, rtol=1e-4, atol=1e-5)


def test_transformer_hidden_states_bad_input():
  config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, num_layers=1, max_len=6)
  params = init_params(jax.random.key(1), config)
  tokens = jnp.ones((2, 5), jnp.int32)
  with pytest.raises(TypeError, match="`tokens`"):
    ld.transformer_hidden_states(params, config, tokens.astype(jnp.float32))
  with pytest.raises(ValueError, match="`tokens` must have shape"):
    ld.transformer_hidden_states(params, config, tokens[0])
  with pytest.raises(ValueError, match="`tokens` has 7 tokens"):
    ld.transformer_hidden_states(params, config, jnp.ones((2, 7), jnp.int32))
  # An id outside [0, V) read a NaN embedding row (or a wrapped-around token's).
  with pytest.raises(ValueError, match=r"`tokens` must lie in \[0, 20\)"):
    ld.transformer_hidden_states(params, config, tokens.at[0, 1].set(20))
  with pytest.raises(TypeError, match="`config`"):
    ld.transformer_hidden_states(params, {"vocab_size": 20}, tokens)


# ----------------------------------------------------------------------------------------------------------------
# The linear toy


def _toy(seed, vocab=6, dim=4):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(vocab, dim))), jnp.asarray(rng.normal(size=dim))


def _flat_loss(w, h, chosen, rejected, reference, beta, train_unembeddings):
  return lambda theta: ld.linear_toy_dpo_loss(
    theta[0] if train_unembeddings else w, theta[1], chosen, rejected, reference, beta=beta
  )


@pytest.mark.parametrize("train_unembeddings", [False, True])
def test_log_prob_rate_matches_finite_difference(x64, train_unembeddings):
  for seed in range(4):
    w, h = _toy(seed)
    chosen, rejected, beta = 1, 3, 0.3
    # A reference other than the current model, so that c = β σ(−β (m − m_ref)) is not β/2.
    w_ref, h_ref = _toy(100 + seed)
    reference = ld.linear_toy_log_probs(w_ref, h_ref)
    rate = ld.linear_toy_log_prob_rate(
      w,
      h,
      chosen,
      rejected,
      beta=beta,
      reference_margin=reference[chosen] - reference[rejected],
      train_unembeddings=train_unembeddings,
    )
    loss = _flat_loss(w, h, chosen, rejected, reference, beta, train_unembeddings)
    gw, gh = jax.grad(loss)((w, h))
    eta = 1e-6
    w_next = w - eta * gw if train_unembeddings else w
    h_next = h - eta * gh
    fd = (ld.linear_toy_log_probs(w_next, h_next)[chosen] - ld.linear_toy_log_probs(w, h)[chosen]) / eta
    np.testing.assert_allclose(rate.total, fd, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(rate.total, rate.hidden_term + rate.unembedding_term, rtol=1e-12)
    if not train_unembeddings:
      assert rate.unembedding_term == 0


def test_log_prob_rate_matches_autodiff_inner_product(x64):
  """⟨∇ log π(y⁺), −∇ℓ⟩ by jax.grad, per parameter group: the hidden and unembedding terms separately."""
  w, h = _toy(11, vocab=8, dim=5)
  chosen, rejected, beta = 2, 5, 0.1
  reference = ld.linear_toy_log_probs(w, h)  # the reference is the start: c = β/2
  grad_lp = jax.grad(lambda theta: ld.linear_toy_log_probs(*theta)[chosen])((w, h))
  grad_loss = jax.grad(_flat_loss(w, h, chosen, rejected, reference, beta, True))((w, h))
  margin = reference[chosen] - reference[rejected]
  rate = ld.linear_toy_log_prob_rate(w, h, chosen, rejected, beta=beta, reference_margin=margin)
  np.testing.assert_allclose(rate.unembedding_term, -jnp.sum(grad_lp[0] * grad_loss[0]), rtol=1e-10)
  np.testing.assert_allclose(rate.hidden_term, -jnp.sum(grad_lp[1] * grad_loss[1]), rtol=1e-10)


def test_log_prob_rate_sign_follows_the_embedding_geometry():
  """W⁺ = W⁻ gives no hidden motion; W⁺ ≈ W⁻ with a token aligned to W⁺ − W⁻ gives displacement."""
  w = jnp.array([[0.0, 3.0], [1.0, 0.2], [1.0, -0.2]])  # Yes, No, Never
  rate = ld.linear_toy_log_prob_rate(w, jnp.array([1.5, 0.0]), 1, 2, beta=0.1, train_unembeddings=False)
  assert rate.total < 0
  same = ld.linear_toy_log_prob_rate(w.at[2].set(w[1]), jnp.array([1.5, 0.0]), 1, 2, beta=0.1)
  assert same.hidden_term == 0 and same.unembedding_term > 0
  self_pair = ld.linear_toy_log_prob_rate(w, jnp.array([1.5, 0.0]), 1, 1, beta=0.1)
  assert self_pair.total == 0


def test_log_prob_rate_jit_and_vmap():
  w, _ = _toy(12)
  hs = jax.random.normal(jax.random.key(0), (5, 4))
  fn = lambda h: ld.linear_toy_log_prob_rate(w, h, 0, 2, beta=0.5).total
  batched = jax.vmap(fn)(hs)
  np.testing.assert_allclose(batched, [fn(h) for h in hs], rtol=1e-5)
  np.testing.assert_allclose(jax.jit(fn)(hs[0]), fn(hs[0]), rtol=1e-6)
  # Traced token ids are accepted too.
  rates = jax.vmap(lambda c: ld.linear_toy_log_prob_rate(w, hs[0], c, 2, beta=0.5).total)(jnp.arange(3))
  np.testing.assert_allclose(rates[1], ld.linear_toy_log_prob_rate(w, hs[0], 1, 2, beta=0.5).total, rtol=1e-6)


def test_linear_toy_dpo_is_gradient_descent_and_displaces():
  w = jnp.array([[0.0, 3.0], [1.0, 0.2], [1.0, -0.2]])
  h = jnp.array([3.0, 0.0])
  run = ld.linear_toy_dpo(w, h, 1, 2, beta=0.1, optimizer=optax.sgd(1.0), num_steps=300, train_unembeddings=False)
  np.testing.assert_allclose(run.loss[0], np.log(2.0), rtol=1e-6)  # policy = reference at the start
  assert np.all(np.diff(np.asarray(run.loss)) < 0)  # DPO keeps improving ...
  assert run.probs[-1, 1] < 0.05 * run.probs[0, 1] and run.probs[-1, 0] > 0.95  # ... while Yes takes No's mass
  np.testing.assert_array_equal(run.unembeddings, w)  # frozen
  # One step by hand: h − lr ∇_h ℓ.
  one = ld.linear_toy_dpo(w, h, 1, 2, beta=0.1, optimizer=optax.sgd(0.5), num_steps=1, train_unembeddings=True)
  reference = ld.linear_toy_log_probs(w, h)
  gw, gh = jax.grad(_flat_loss(w, h, 1, 2, reference, 0.1, True))((w, h))
  np.testing.assert_allclose(one.hidden, h - 0.5 * gh, rtol=1e-6)
  np.testing.assert_allclose(one.unembeddings, w - 0.5 * gw, rtol=1e-6)
  np.testing.assert_allclose(one.probs[1], jnp.exp(ld.linear_toy_log_probs(w - 0.5 * gw, h - 0.5 * gh)), rtol=1e-5)


def test_linear_toy_bad_input():
  w, h = _toy(13)
  with pytest.raises(ValueError, match="`unembeddings` must be \\(V, D\\) and `hidden` \\(D,\\)"):
    ld.linear_toy_log_probs(w, h[:-1])
  # Indexing used to clamp an out-of-range id to the last token.
  with pytest.raises(ValueError, match=r"`chosen` must lie in \[0, "):
    ld.linear_toy_dpo_loss(w, h, w.shape[0] + 1, 0, jnp.zeros(w.shape[0]), beta=0.1)
  with pytest.raises(ValueError, match=r"`rejected` must lie in \[0, "):
    ld.linear_toy_dpo_loss(w, h, 0, -1, jnp.zeros(w.shape[0]), beta=0.1)
  with pytest.raises(ValueError, match="hidden"):
    ld.linear_toy_log_prob_rate(w, h[:-1], 0, 1, beta=0.1)
  with pytest.raises(ValueError, match="unembeddings"):
    ld.linear_toy_log_prob_rate(w[0], h, 0, 1, beta=0.1)
  with pytest.raises(ValueError, match="chosen"):
    ld.linear_toy_log_prob_rate(w, h, 6, 1, beta=0.1)
  with pytest.raises(TypeError, match="rejected"):
    ld.linear_toy_log_prob_rate(w, h, 0, 1.0, beta=0.1)
  with pytest.raises(ValueError, match="num_steps"):
    ld.linear_toy_dpo(w, h, 0, 1, beta=0.1, optimizer=optax.sgd(0.1), num_steps=-1)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_ches_keeps_the_hidden_dtype(dtype, x64):
  h_pos, h_neg, m_pos, m_neg = _random_pair(9)
  out = ld.ches_score(jnp.asarray(h_pos, dtype), jnp.asarray(h_neg, dtype), m_pos, m_neg, length_normalized=True)
  assert out.dtype == dtype
  np.testing.assert_allclose(
    np.asarray(out, np.float64),
    _ches_loop(h_pos, h_neg, m_pos, m_neg, True),
    rtol=0.05 if dtype == jnp.bfloat16 else 1e-5,
  )
