"""FTWT against the mass criterion written as the authors' sort-and-cumsum loop, hand-counted FLOPs and gradient
identities of the decoupled mode."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.models.cnn import CNN
from toolkit.pruning import ftwt


def reference_mass_target(scores, threshold, delta=1e-5):
  """The criterion as the authors state it, per row in float64: drop the channels, in descending order of normalised
  score, whose cumulative mass exceeds the threshold by more than delta (threshold 1: drop the near-zero ones)."""
  scores = np.asarray(scores, np.float64).reshape(-1, np.shape(scores)[-1])
  out = np.ones_like(scores)
  for row, a in enumerate(scores):
    norm = a / a.sum() if a.sum() > 0 else np.zeros_like(a)
    if threshold == 1:
      out[row, norm <= delta] = 0
      continue
    order = np.argsort(-norm, kind="stable")
    cum = 0.0
    for j in order:
      cum += norm[j]
      if cum - threshold > delta or norm[j] <= delta:
        out[row, j] = 0
  return out.reshape(np.shape(scores))


@pytest.mark.parametrize("num_channels", [7, 32, 100])
def test_uniform_heatmaps_keep_floor(num_channels):
  thresholds = [0.33, 0.5, 0.8, 0.92, 0.97]
  # τ·C an integer: the +1e-5 tolerance keeps exactly τ·C channels despite float32 rounding of the cumsum.
  exact = [kept / num_channels for kept in (num_channels // 2, num_channels - 3, num_channels - 1)]
  kept = jax.vmap(lambda t: ftwt.mass_target(jnp.full((num_channels,), 2.5), t).sum())(jnp.asarray(thresholds + exact))
  expected = [math.floor(t * num_channels) for t in thresholds] + [round(t * num_channels) for t in exact]
  np.testing.assert_array_equal(kept, expected)


def test_threshold_one_keeps_all_live_channels(key):
  scores = jax.random.uniform(key, (64, 48), minval=0.01, maxval=5.0)
  np.testing.assert_array_equal(ftwt.mass_target(scores, 1.0), np.ones((64, 48)))
  dead = scores.at[:, ::5].set(0.0)
  np.testing.assert_array_equal(ftwt.mass_target(dead, 1.0), np.asarray(dead > 0, np.float32))


def test_matches_reference_with_ties_and_dead_channels(key):
  k1, k2 = jax.random.split(key)
  # Rounded scores give ties; about a fifth are zero (dead channels).
  scores = jnp.round(jax.random.exponential(k1, (40, 24)) * 4) / 4
  scores = jnp.where(jax.random.uniform(k2, scores.shape) < 0.2, 0.0, scores)
  for threshold in (0.3, 0.6, 0.8, 0.9, 0.95, 1.0):
    np.testing.assert_array_equal(ftwt.mass_target(scores, threshold), reference_mass_target(scores, threshold))


def test_kept_sets_nested_and_monotone_in_threshold(key):
  scores = jax.random.exponential(key, (32, 20)) ** 2
  thresholds = np.linspace(0.05, 1.0, 20)
  masks = jax.vmap(lambda t: ftwt.mass_target(scores, t))(jnp.asarray(thresholds))
  counts = np.asarray(masks.sum(-1))
  assert np.all(np.diff(counts, axis=0) >= 0)
  assert np.all(masks[1:] >= masks[:-1])  # a channel kept at τ stays kept at every larger τ
  # The traced thresholds under vmap agree with Python-float thresholds.
  np.testing.assert_array_equal(masks[7], ftwt.mass_target(scores, float(thresholds[7])))


def test_target_subset_of_nonzero_and_kept_mass(key):
  scores = jax.nn.relu(jax.random.normal(key, (50, 16)))  # about half zero
  for threshold in (0.5, 0.9, 1.0):
    target = np.asarray(ftwt.mass_target(scores, threshold))
    assert np.all(target <= (np.asarray(scores) > 0))
    # The kept mass is within the threshold, and adding the next largest dropped channel would exceed it.
    norm = np.asarray(scores) / np.asarray(scores).sum(-1, keepdims=True)
    kept_mass = (norm * target).sum(-1)
    assert np.all(kept_mass <= threshold + 1e-5)
    if threshold < 1:
      next_mass = np.max(np.where(target == 0, norm, 0), axis=-1)
      assert np.all(kept_mass + next_mass > threshold - 1e-5)
  np.testing.assert_array_equal(ftwt.mass_target(jnp.zeros((3, 4)), 0.9), np.zeros((3, 4)))


def test_jit_equals_eager_and_heatmap_scores(key):
  act = jax.random.normal(key, (4, 5, 6, 8))
  scores = ftwt.heatmap_scores(act)
  np.testing.assert_allclose(scores, np.abs(np.asarray(act)).max(axis=(1, 2)))
  eager = ftwt.mass_target(scores, 0.8)
  np.testing.assert_array_equal(jax.jit(ftwt.mass_target)(scores, 0.8), eager)


def test_flops_hand_count_two_layers():
  # Input 4×4×3, a 3×3 'SAME' conv with 2 channels, then one with 5; per input masks keep (2, 5), (1, 3), (0, 4).
  model = CNN(features=(2, 5), num_classes=3)
  x = jnp.ones((3, 4, 4, 3))
  geometry = ftwt.model_geometry(model, x)
  assert geometry == {"input_channels": 3, "spatial_sizes": (16, 16), "kernel_taps": 9}
  active = jnp.array([[2.0, 5.0], [1.0, 3.0], [0.0, 4.0]])
  hand = [
    2 * 16 * 3 * 9 + 5 * 16 * 2 * 9,  # 864 + 1440
    1 * 16 * 3 * 9 + 3 * 16 * 1 * 9,  # 432 + 432
    0 + 4 * 16 * 0 * 9,
  ]
  np.testing.assert_array_equal(ftwt.conv_flops(active, **geometry), hand)
  assert ftwt.dense_flops(model, x) == hand[0]
  assert ftwt.predictor_flops(model, x) == 3 * 2 + 2 * 5
  # A 1-D CNN (kernel 5, length 10): taps 5, positions 10.
  model_1d = CNN(features=(2,), num_classes=3, kernel_size=(5,))
  assert ftwt.dense_flops(model_1d, jnp.ones((1, 10, 1))) == 2 * 10 * 1 * 5


@pytest.fixture(scope="module")
def toy():
  model = CNN(features=(4, 6), num_classes=3)
  x = jax.random.normal(jax.random.key(1), (8, 6, 6, 2))
  y = jnp.arange(8) % 3
  params = model.init(jax.random.key(2), x)["params"]
  predictors = ftwt.init_predictors(jax.random.key(3), model, x, initial_bias=0.0)
  # Random predictor weights, so that masks vary with the input.
  predictors = jax.tree.map(lambda p: p + 2.0 * jax.random.normal(jax.random.key(4), p.shape), predictors)
  return model, x, y, params, predictors


def test_dynamic_forward_masks_and_counts(toy):
  model, x, _, params, predictors = toy
  out = ftwt.dynamic_forward(model, params, predictors, x, threshold=0.8)
  # The masks are the thresholded predictor logits, the counts their sums, and the logits those of the backbone
  # under those masks; the targets are the criterion on the masked network's unmasked outputs.
  for logits, mask in zip(out.mask_logits, out.masks):
    np.testing.assert_array_equal(mask, np.asarray(jax.nn.sigmoid(logits) > 0.5, np.float32))
  np.testing.assert_array_equal(out.active_channels, np.stack([np.asarray(m).sum(-1) for m in out.masks], -1))
  logits, state = model.apply({"params": params}, x, list(out.masks), mutable=["intermediates"])
  np.testing.assert_allclose(out.logits, logits, rtol=1e-6, atol=1e-6)
  inter = state["intermediates"]
  for i, target in enumerate(out.targets):
    expected = reference_mass_target(np.abs(np.asarray(inter[f"conv_{i}_output"][0])).max(axis=(1, 2)), 0.8)
    np.testing.assert_array_equal(target, expected)
  # Predictor 1 reads the masked output of layer 0: mean-pool, softmax, linear.
  pooled = np.asarray(inter["conv_1_input"][0]).mean(axis=(1, 2))
  soft = np.exp(pooled) / np.exp(pooled).sum(-1, keepdims=True)
  lin = predictors[1]["linear"]
  np.testing.assert_allclose(out.mask_logits[1], soft @ lin["kernel"] + lin["bias"], rtol=1e-5, atol=1e-5)
  assert 0 < float(out.active_channels.mean()) < 10  # the random predictors drop some channels, not all
  jitted = jax.jit(lambda p, q, xb: ftwt.dynamic_forward(model, p, q, xb, threshold=0.8))(params, predictors, x)
  np.testing.assert_allclose(jitted.logits, out.logits, rtol=1e-5, atol=1e-5)


def test_decoupled_backbone_gradients_ignore_mask_loss(toy):
  model, x, y, params, predictors = toy
  trainable = {"backbone": params, "predictors": predictors}

  @functools.partial(jax.jit, static_argnums=0)
  def grads(decoupled, weight):
    def objective(t):
      task, masks_loss, _ = ftwt.loss_terms(t, x, y, model=model, threshold=0.8, decoupled=decoupled)
      return task + weight * masks_loss

    return jax.grad(objective)(trainable)

  with_loss, without = grads(True, 1.0), grads(True, 0.0)
  for a, b in zip(jax.tree.leaves(with_loss["backbone"]), jax.tree.leaves(without["backbone"])):
    np.testing.assert_array_equal(a, b)
  # The mask loss does train the predictors, and in the joint mode it reaches the backbone too (the control).
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(with_loss["predictors"]), jax.tree.leaves(without["predictors"]))
  )
  joint_with, joint_without = grads(False, 1.0), grads(False, 0.0)
  diff = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(jax.tree.leaves(joint_with["backbone"]), jax.tree.leaves(joint_without["backbone"]))
  )
  assert diff > 1e-4


def test_straight_through_and_inference_masks():
  logits = jnp.array([-2.0, -0.1, 0.3, 4.0])
  np.testing.assert_array_equal(ftwt.binarize(logits), [0, 0, 1, 1])
  ste = jax.grad(lambda z: jnp.sum(ftwt.binarize(z) * jnp.arange(1.0, 5.0)))(logits)
  sig = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(ste, sig * (1 - sig) * jnp.arange(1.0, 5.0), rtol=1e-6)
  no_ste = jax.grad(lambda z: jnp.sum(ftwt.binarize(z, straight_through=False)))(logits)
  np.testing.assert_array_equal(no_ste, 0)


def test_mask_loss_and_predictor_accuracy_formulas(key):
  logits = [jax.random.normal(key, (5, 3)), jax.random.normal(jax.random.fold_in(key, 1), (5, 4))]
  targets = [jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, c)), jnp.float32) for c in (3, 4)]
  expected = 0.0
  for z, t in zip(logits, targets):
    z, t = np.asarray(z, np.float64), np.asarray(t, np.float64)
    expected += np.sum(np.mean(-(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 / (1 + np.exp(z)))), 0))
  np.testing.assert_allclose(ftwt.mask_loss(logits, targets), expected, rtol=1e-5)
  masks = [ftwt.binarize(z) for z in logits]
  hits = sum(np.sum(np.asarray(m) == np.asarray(t)) for m, t in zip(masks, targets))
  np.testing.assert_allclose(ftwt.predictor_accuracy(masks, targets), hits / 35, rtol=1e-6)


def test_step_trains_predictors_toward_targets(toy):
  model, x, y, params, predictors = toy
  optimizer = optax.multi_transform(
    {"backbone": optax.set_to_zero(), "predictors": optax.adam(0.1)},
    {"backbone": "backbone", "predictors": "predictors"},
  )
  state = ftwt.init(params, predictors, optimizer)
  run = jax.jit(lambda s: ftwt.step(s, x, y, model=model, optimizer=optimizer, threshold=0.8))
  state, first = run(state)
  for _ in range(60):
    state, info = run(state)
  assert float(info.mask_loss) < 0.5 * float(first.mask_loss)
  assert float(info.predictor_accuracy) > float(first.predictor_accuracy) + 0.1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):  # backbone frozen by the optimiser
    np.testing.assert_array_equal(a, b)


def test_flops_estimate_matches_targets(toy):
  model, x, _, params, _ = toy
  est = ftwt.flops_estimate(model, params, x, threshold=0.8)
  _, state = model.apply({"params": params}, x, mutable=["intermediates"])
  inter = state["intermediates"]
  counts = np.stack(
    [
      reference_mass_target(np.abs(np.asarray(inter[f"conv_{i}_output"][0])).max(axis=(1, 2)), 0.8).sum(-1)
      for i in range(2)
    ],
    -1,
  )
  np.testing.assert_array_equal(est.active_channels, counts)
  hand = counts[:, 0] * 36 * 2 * 9 + counts[:, 1] * 36 * counts[:, 0] * 9
  np.testing.assert_allclose(est.flops, hand)
  assert est.dense == 4 * 36 * 2 * 9 + 6 * 36 * 4 * 9
  np.testing.assert_allclose(est.reduction, 1 - hand.mean() / est.dense, rtol=1e-6)
  assert float(ftwt.flops_estimate(model, params, x, threshold=1.0).reduction) < float(est.reduction)


def test_l1_masks_and_matched_counts(key):
  kernel = jax.random.normal(key, (3, 3, 2, 6))
  params = {"conv_0": {"kernel": kernel}}
  norms = np.abs(np.asarray(kernel)).sum(axis=(0, 1, 2))
  mask = np.asarray(ftwt.l1_channel_masks(params, (4,))[0])
  assert mask.sum() == 4 and norms[mask == 1].min() > norms[mask == 0].max()
  geometry = {"input_channels": 1, "spatial_sizes": (64, 64, 64), "kernel_taps": 9}
  dense = float(ftwt.conv_flops(jnp.array([16.0, 32.0, 32.0]), **geometry))
  for budget in (0.2, 0.5, 0.8):
    counts = ftwt.uniform_keep_counts((16, 32, 32), budget * dense, **geometry)
    flops = float(ftwt.conv_flops(jnp.asarray(counts, jnp.float32), **geometry))
    assert budget * dense <= flops <= budget * dense * 1.2


def test_bad_inputs(toy):
  model, x, _, params, predictors = toy
  with pytest.raises(ValueError, match="`threshold` must be in"):
    ftwt.mass_target(jnp.ones(4), 1.5)
  with pytest.raises(ValueError, match="`threshold` must be in"):
    ftwt.mass_target(jnp.ones(4), 0.0)
  with pytest.raises(ValueError, match="`threshold` must be a scalar"):
    ftwt.mass_target(jnp.ones(4), jnp.ones(2))
  with pytest.raises(TypeError, match="`threshold`"):
    ftwt.mass_target(jnp.ones(4), True)
  with pytest.raises(ValueError, match="`scores` must have shape"):
    ftwt.mass_target(jnp.array(1.0), 0.5)
  with pytest.raises(TypeError, match="`scores` must be a floating"):
    ftwt.mass_target(jnp.ones(4, jnp.int32), 0.5)
  with pytest.raises(ValueError, match="`activation` must have shape"):
    ftwt.heatmap_scores(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="`active_channels` must have shape"):
    ftwt.conv_flops(jnp.ones((2, 3)), input_channels=1, spatial_sizes=(4, 4), kernel_taps=9)
  with pytest.raises(ValueError, match="`input_channels`"):
    ftwt.conv_flops(jnp.ones(2), input_channels=0, spatial_sizes=(4, 4), kernel_taps=9)
  with pytest.raises(ValueError, match="`predictors` must have one entry per layer"):
    ftwt.dynamic_forward(model, params, predictors[:1], x, threshold=0.9)
  with pytest.raises(ValueError, match="`keep_counts\\[0\\]`"):
    ftwt.l1_channel_masks(params, (5,))
  with pytest.raises(ValueError, match="equal shapes"):
    ftwt.mask_loss([jnp.zeros((2, 3))], [jnp.zeros((2, 4))])
  with pytest.raises(TypeError, match="`model` must be a CNN-like"):
    ftwt.init_predictors(jax.random.key(0), object(), x)


# Bad input


def test_bad_input_masks_and_flops(toy):
  model, x, _, params, _ = toy
  with pytest.raises(TypeError, match="`mask_logits`"):
    ftwt.binarize(jnp.array([0, 1, 1]))
  with pytest.raises(ValueError, match="`masks` and `targets`"):
    ftwt.predictor_accuracy([jnp.ones((2, 3))], [jnp.ones((2, 3)), jnp.ones((2, 4))])
  with pytest.raises(ValueError, match="`masks\\[0\\]` and `targets\\[0\\]`"):
    ftwt.predictor_accuracy([jnp.ones((2, 3))], [jnp.ones((1, 3))])
  with pytest.raises(TypeError, match="`model`"):
    ftwt.model_geometry(object(), x)
  with pytest.raises(TypeError, match="`model`"):
    ftwt.dense_flops(object(), x)
  with pytest.raises(TypeError, match="`model`"):
    ftwt.predictor_flops(object(), x)
  with pytest.raises(ValueError, match="`threshold`"):
    ftwt.flops_estimate(model, params, x, threshold=1.5)
  geometry = {"input_channels": 1, "spatial_sizes": (16, 16), "kernel_taps": 9}
  with pytest.raises(ValueError, match="`features`"):
    ftwt.uniform_keep_counts((4, 0), 100.0, **geometry)
  with pytest.raises(ValueError, match="`features` and `spatial_sizes`"):
    ftwt.uniform_keep_counts((4, 8, 8), 100.0, **geometry)
  with pytest.raises(ValueError, match="`target_flops`"):
    ftwt.uniform_keep_counts((4, 8), float("nan"), **geometry)


def test_bad_input_training(toy):
  model, x, y, params, predictors = toy
  with pytest.raises(TypeError, match="`optimizer`"):
    ftwt.init(params, predictors, optax.adam)
  trainable = {"backbone": params, "predictors": predictors}
  with pytest.raises(ValueError, match="`trainable`"):
    ftwt.loss_terms({"params": params}, x, y, model=model, threshold=0.8)
  with pytest.raises(ValueError, match="`y`"):
    ftwt.loss_terms(trainable, x, y[:4], model=model, threshold=0.8)
  with pytest.raises(TypeError, match="`y`"):
    ftwt.loss_terms(trainable, x, y.astype(jnp.float32), model=model, threshold=0.8)
  with pytest.raises(ValueError, match="`y`"):
    ftwt.loss_terms(trainable, x, y + 3, model=model, threshold=0.8)
  state = ftwt.init(params, predictors, optax.sgd(0.1))
  with pytest.raises(ValueError, match="`threshold`"):
    ftwt.step(state, x, y, model=model, optimizer=optax.sgd(0.1), threshold=1.5)
