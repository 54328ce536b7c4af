"""Lottery Jackpots (arXiv 2104.08700) against numpy brute force: the global magnitude mask, the code's swap
(``final_pop_up`` written out with sorts), exact sparsity, frozen weights and the straight-through gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.models.mlp import MLP
from toolkit.pruning import lottery_jackpot as lj


def _params(seed=0):
  model = MLP((12, 8, 4), use_bias=True)
  return model, model.init(jax.random.key(seed), jnp.ones((1, 6)))["params"]


def _batches(num_steps=6, batch=16, seed=1):
  x = jax.random.normal(jax.random.key(seed), (num_steps, batch, 6))
  y = jax.random.randint(jax.random.key(seed + 1), (num_steps, batch), 0, 4)
  return x, y


def _loss(model):
  def loss(p, batch):
    return optax.losses.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, batch[0]), batch[1]).mean()

  return loss


def _np_magnitude_mask(params, sparsity, names):
  """Brute force: sort every prunable |w| together; keep those at or above the smallest kept magnitude."""
  flat = {k: np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  pruned = [v for k, v in flat.items() if jax.tree_util.keystr(k) in names]
  allw = np.sort(np.concatenate([np.abs(v).ravel() for v in pruned]))
  threshold = allw[round(sparsity * allw.size)]
  return {
    jax.tree_util.keystr(k): (np.abs(v) >= threshold).astype(v.dtype) if jax.tree_util.keystr(k) in names else 1 + 0 * v
    for k, v in flat.items()
  }


def _np_swap(scores, mask, rate):
  """The authors' final_pop_up, with stable sorts (ties by position), in numpy."""
  s, kept = np.asarray(scores).ravel(), np.asarray(mask).ravel() > 0
  k = int((~kept).sum())
  if k == 0:
    return kept.reshape(np.shape(mask)), 0
  tau = np.sort(s)[k - 1]
  revive = np.flatnonzero(~kept & (s > tau))
  drop = np.flatnonzero(kept & (s <= tau))
  if len(revive) == 0 or len(revive) != len(drop):
    return kept.reshape(np.shape(mask)), 0
  p = min(math.ceil(np.float32(rate) * np.float32(len(revive))), len(revive))
  new = kept.copy()
  new[revive[np.argsort(-s[revive], kind="stable")[:p]]] = True
  new[drop[np.argsort(s[drop], kind="stable")[:p]]] = False
  return new.reshape(np.shape(mask)), p


KERNELS = {"['dense_0']['kernel']", "['dense_1']['kernel']", "['dense_2']['kernel']"}


@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.9])
def test_magnitude_mask_matches_numpy_global_threshold(sparsity):
  _, params = _params()
  mask = lj.magnitude_mask(params, sparsity)
  expected = _np_magnitude_mask(params, sparsity, KERNELS)
  for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
    np.testing.assert_array_equal(np.asarray(m), expected[jax.tree_util.keystr(path)])
  # The head left dense, by flag or by name: the threshold is global over the two other kernels only.
  expected = _np_magnitude_mask(params, 0.8, KERNELS - {"['dense_2']['kernel']"})
  for prunable, last in ((lj.is_kernel, True), (lj.kernels_except("dense_2"), False)):
    mask = lj.magnitude_mask(params, 0.8, prunable=prunable, keep_last_dense=last)
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
      np.testing.assert_array_equal(np.asarray(m), expected[jax.tree_util.keystr(path)])
  jitted = jax.jit(lj.magnitude_mask, static_argnames="sparsity")(params, sparsity=0.9)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), jitted, lj.magnitude_mask(params, 0.9)))


def test_init_mask_is_the_magnitude_mask():
  _, params = _params()
  state = lj.init(params, sparsity=0.75, optimizer=optax.sgd(0.1), keep_last_dense=True)
  expected = lj.magnitude_mask(params, 0.75, keep_last_dense=True)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.masks, expected))
  k0 = state.scores["dense_0"]["kernel"]
  np.testing.assert_array_equal(
    np.asarray(k0), np.where(np.asarray(expected["dense_0"]["kernel"]) > 0, 1.0, 0.99).astype(np.float32)
  )
  assert state.scores["dense_2"]["kernel"] is None and state.scores["dense_0"]["bias"] is None
  # Random init: same per-leaf counts as the magnitude allocation, mask = each leaf's top scores.
  rand = lj.init(params, sparsity=0.75, optimizer=optax.sgd(0.1), score_init=lj.random_scores, key=jax.random.key(3))
  mag = lj.magnitude_mask(params, 0.75)
  for name in ("dense_0", "dense_1", "dense_2"):
    m, s = np.asarray(rand.masks[name]["kernel"]), np.asarray(rand.scores[name]["kernel"])
    assert m.sum() == np.asarray(mag[name]["kernel"]).sum()
    assert s[m > 0].min() > s[m == 0].max()


@pytest.mark.slow
def test_search_keeps_sparsity_weights_and_matches_hand_driven_steps():
  model, params = _params()
  frozen = jax.tree.map(np.array, params)
  opt = optax.sgd(3.0, momentum=0.9)
  state0 = lj.init(params, sparsity=0.8, optimizer=opt)
  batches = _batches()
  schedule = lambda t: lj.cosine_rate(t, 6)
  state, losses, infos = jax.jit(
    lambda st: lj.search(st, params, _loss(model), batches, optimizer=opt, rate_schedule=schedule)
  )(state0)
  assert int(sum(jnp.sum(v) for v in jax.tree.leaves(infos.num_swapped))) > 0  # the masks did change
  # By hand, step by step: same result bit for bit; the per-leaf sparsity never moves.
  hand = state0
  grad_fn = jax.jit(
    lambda st, b: jax.value_and_grad(lambda s: _loss(model)(lj.reparametrize(params, s, st.masks), b))(st.scores)
  )
  step_fn = jax.jit(lambda st, g: lj.step(st, g, optimizer=opt, rate=schedule(st.count)))
  counts = jax.tree.map(lambda m: int(jnp.sum(m == 0)), state0.masks)
  for t in range(6):
    batch = (batches[0][t], batches[1][t])
    loss, grads = grad_fn(hand, batch)
    assert float(loss) == pytest.approx(float(losses[t]), rel=1e-6)
    hand, _ = step_fn(hand, grads)
    assert jax.tree.map(lambda m: int(jnp.sum(m == 0)), hand.masks) == counts
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), hand.masks, state.masks))
  assert float(lj.sparsity_of(state.masks, state.scores)) == pytest.approx(0.8, abs=1e-3)
  # Frozen weights: params untouched, and the sparse network's kept entries are the pretrained ones bit for bit.
  for w, w0, m, r in zip(
    jax.tree.leaves(params),
    jax.tree.leaves(frozen),
    jax.tree.leaves(state.masks),
    jax.tree.leaves(lj.reparametrize(params, state.scores, state.masks)),
  ):
    np.testing.assert_array_equal(np.asarray(w), w0)
    sparse = np.asarray(w) * np.asarray(m)
    np.testing.assert_array_equal(sparse[np.asarray(m) > 0], w0[np.asarray(m) > 0])
    np.testing.assert_array_equal(np.asarray(r), sparse)


def test_score_gradient_is_straight_through():
  model, params = _params()
  state = lj.init(params, sparsity=0.6, optimizer=optax.sgd(0.1), score_init=lj.random_scores, key=jax.random.key(0))
  batch = jax.tree.map(lambda b: b[0], _batches())
  loss = _loss(model)
  grads = jax.grad(lambda s: loss(lj.reparametrize(params, s, state.masks), batch))(state.scores)
  weff_grads = jax.grad(loss)(lj.apply_masks(params, state.masks), batch)
  for name in ("dense_0", "dense_1", "dense_2"):
    expected = weff_grads[name]["kernel"] * params[name]["kernel"]
    np.testing.assert_allclose(np.asarray(grads[name]["kernel"]), np.asarray(expected), rtol=1e-5, atol=1e-8)
    assert grads[name]["bias"] is None
  assert jax.tree.structure(grads) == jax.tree.structure(state.scores)


_swap = jax.jit(lj.swap)


@pytest.mark.parametrize("ties", [False, True])
def test_swap_matches_numpy_final_pop_up(ties):
  rng = np.random.default_rng(7)
  for rate in (1.0, 0.5, 0.13, 0.0):
    for _ in range(6):
      n = 60
      mask = np.ones(n, np.float32)
      mask[rng.choice(n, 45, replace=False)] = 0.0
      scores = rng.uniform(0.1, 1.0, n).astype(np.float32)
      if ties:
        scores = np.round(scores * 5).astype(np.float32) + 1.0
      new, num, cand = _swap(jnp.asarray(scores), jnp.asarray(mask), rate)
      expected, p = _np_swap(scores, mask, rate)
      np.testing.assert_array_equal(np.asarray(new) > 0, expected)
      assert int(num) == p and int(num) <= math.ceil(rate * int(cand))
      assert int(np.sum(np.asarray(new) != mask)) == 2 * int(num)  # as many revived as dropped
      assert np.sum(np.asarray(new) == 0) == 45
  rate = 0.5
  # vmap over leaves of one shape equals the loop.
  s = jnp.asarray(rng.uniform(0.1, 1.0, (3, 20)), jnp.float32)
  m = jnp.asarray(rng.uniform(size=(3, 20)) > 0.7, jnp.float32)
  batched = jax.vmap(lj.swap, in_axes=(0, 0, None))(s, m, rate)
  for i in range(3):
    np.testing.assert_array_equal(np.asarray(batched[0][i]), np.asarray(lj.swap(s[i], m[i], rate)[0]))


def test_rate_one_gives_top_k_of_scores():
  rng = np.random.default_rng(0)
  _, params = _params()
  opt = optax.sgd(1.0)
  state = lj.init(params, sparsity=0.7, optimizer=opt)
  grads = jax.tree.map(
    lambda s: None if s is None else jnp.asarray(rng.normal(size=s.shape), s.dtype),
    state.scores,
    is_leaf=lambda x: x is None,
  )
  new, info = lj.step(state, grads, optimizer=opt, rate=1.0)
  for s, m, m0 in zip(
    jax.tree.leaves(new.scores), jax.tree.leaves(new.masks)[1::2], jax.tree.leaves(state.masks)[1::2]
  ):  # kernels only: masks leaves alternate bias, kernel
    num_kept = int(np.sum(np.asarray(m0)))
    top = np.zeros(s.size, bool)
    top[np.argsort(-np.asarray(s).ravel(), kind="stable")[:num_kept]] = True
    np.testing.assert_array_equal(np.asarray(m).ravel() > 0, top)
  assert int(info.num_swapped["dense_1"]["kernel"]) > 0


def test_cosine_rate_and_jit_step():
  np.testing.assert_allclose(
    np.asarray(lj.cosine_rate(jnp.arange(5), 4)), [1.0, 0.853553, 0.5, 0.146447, 0.0], atol=1e-6
  )
  _, params = _params()
  opt = optax.adam(0.1)
  state = lj.init(params, sparsity=0.5, optimizer=opt)
  grads = jax.tree.map(lambda s: None if s is None else -s * jnp.arange(s.size).reshape(s.shape), state.scores)
  a, _ = lj.step(state, grads, optimizer=opt, rate=0.5)
  b, _ = jax.jit(lambda st, g, r: lj.step(st, g, optimizer=opt, rate=r))(state, grads, 0.5)
  assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a.masks, b.masks))


def test_bad_input():
  _, params = _params()
  opt = optax.sgd(0.1)
  with pytest.raises(ValueError, match="sparsity"):
    lj.magnitude_mask(params, 1.0)
  with pytest.raises(ValueError, match="sparsity"):
    lj.magnitude_mask(params, -0.1)
  with pytest.raises(TypeError, match="sparsity"):
    lj.magnitude_mask(params, "0.5")
  with pytest.raises(TypeError, match="sparsity"):
    lj.magnitude_mask(params, True)
  with pytest.raises(TypeError, match="prunable"):
    lj.magnitude_mask(params, 0.5, prunable="kernel")
  with pytest.raises(ValueError, match="no prunable leaf"):
    lj.magnitude_mask(params, 0.5, prunable=lambda path, leaf: False)
  with pytest.raises(TypeError, match="floating"):
    lj.magnitude_mask({"w": jnp.ones((2, 2), jnp.int32)}, 0.5)
  with pytest.raises(TypeError, match="optimizer"):
    lj.init(params, sparsity=0.5, optimizer="sgd")
  with pytest.raises(ValueError, match="key"):
    lj.init(params, sparsity=0.5, optimizer=opt, score_init=lj.random_scores)
  with pytest.raises(ValueError, match="score_init"):
    lj.init(params, sparsity=0.5, optimizer=opt, score_init=lambda k, w, m: jnp.ones(3))
  state = lj.init(params, sparsity=0.5, optimizer=opt)
  with pytest.raises(ValueError, match="score_grads"):
    lj.step(state, params, optimizer=opt)
  zero_grads = jax.tree.map(jnp.zeros_like, state.scores)
  for rate in (-0.5, 1.5):
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\]"):
      lj.step(state, zero_grads, optimizer=opt, rate=rate)
  with pytest.raises(ValueError, match="rate"):
    lj.step(state, state.scores, optimizer=opt, rate=jnp.ones(2))
  with pytest.raises(TypeError, match="state"):
    lj.step(tuple(state), state.scores, optimizer=opt)
  with pytest.raises(ValueError, match="same shape"):
    lj.swap(jnp.ones(3), jnp.ones(4), 1.0)
  with pytest.raises(TypeError, match="loss_fn"):
    lj.search(state, params, None, _batches(), optimizer=opt)


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_masks_scores_and_helpers():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  masks = jax.tree.map(jnp.ones_like, params)
  scores = {"w": jnp.ones((3, 2)), "b": None}
  with pytest.raises(ValueError, match="`masks` must have the structure of `params`"):
    lj.apply_masks(params, {"w": jnp.ones((3, 2))})
  with pytest.raises(ValueError, match=r"`masks` must have the shapes of `params`: \(3, 2\) at \['w'\]"):
    lj.apply_masks(params, {"w": jnp.ones(2), "b": jnp.ones(2)})
  with pytest.raises(ValueError, match="`scores` must have the structure of `params`"):
    lj.reparametrize(params, {"w": jnp.ones((3, 2))}, masks)
  with pytest.raises(ValueError, match="`scores` must have the shapes of `params`"):
    lj.reparametrize(params, {"w": jnp.ones((1, 2)), "b": None}, masks)
  with pytest.raises(ValueError, match="`num_total` must be > 0"):
    lj.cosine_rate(0, 0)
  with pytest.raises(TypeError, match="`path` must be a jax.tree_util key path"):
    lj.is_kernel(jnp.ones((3, 2)), ())  # arguments swapped
  with pytest.raises(TypeError, match="`names` must be module names"):
    lj.kernels_except(["head"])
  with pytest.raises(TypeError, match="`weight` must be floating point"):
    lj.magnitude_scores(None, jnp.ones((2, 2), jnp.int32), jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="`mask` must have the shape of `weight`"):
    lj.magnitude_scores(None, jnp.ones((2, 3)), jnp.ones(3))
  with pytest.raises(ValueError, match="`key` must be a PRNG key"):
    lj.random_scores(None, jnp.ones((2, 3)), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="`weight` must be floating point"):
    lj.random_scores(jax.random.key(0), jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="`masks` must have at least one entry"):
    lj.sparsity_of({})
  with pytest.raises(ValueError, match="`masks` must have at least one entry on the leaves with `scores`"):
    lj.sparsity_of(masks, {"w": None, "b": None})
  with pytest.raises(ValueError, match="`scores` must have the structure of `masks`"):
    lj.sparsity_of(masks, {"w": jnp.ones((3, 2))})
  # The checks read shapes only: valid input under jit and grad is unchanged.
  assert float(lj.sparsity_of(masks, scores)) == 0.0
  assert float(jax.jit(lj.cosine_rate)(2, 4)) == pytest.approx(0.5)
  grad = jax.grad(lambda s: jnp.sum(lj.reparametrize(params, s, masks)["w"]))(scores)
  np.testing.assert_array_equal(grad["w"], params["w"])
