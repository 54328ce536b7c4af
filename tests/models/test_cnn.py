"""The CNN against a brute-force convolution, and its masks and sown activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.models.cnn import CNN


def brute_conv_same(x, kernel, bias):
  """'SAME' 2-D cross-correlation by explicit loops (x (H, W, Cin), kernel (kh, kw, Cin, Cout))."""
  kh, kw = kernel.shape[:2]
  padded = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros(x.shape[:2] + (kernel.shape[-1],))
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      out[i, j] = np.einsum("abc,abcd->d", padded[i : i + kh, j : j + kw], kernel) + bias
  return out


def test_forward_matches_brute_force_convolution(key):
  model = CNN(features=(3, 4), num_classes=5)
  x = jax.random.normal(key, (2, 6, 6, 2))
  params = model.init(jax.random.key(1), x)["params"]
  for b in range(2):
    h = np.asarray(x[b], np.float64)
    for i in range(2):
      conv = params[f"conv_{i}"]
      h = np.maximum(brute_conv_same(h, np.asarray(conv["kernel"]), np.asarray(conv["bias"])), 0)
    logits = h.mean((0, 1)) @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
    np.testing.assert_allclose(model.apply({"params": params}, x)[b], logits, rtol=1e-5, atol=1e-5)


def test_masks_scale_channels_and_sown_outputs_are_unmasked(key):
  model = CNN(features=(4, 4), num_classes=3, kernel_size=(5,))
  x = jax.random.normal(key, (3, 12, 1))
  variables = model.init(jax.random.key(1), x)
  masks = [jnp.array([1.0, 0.0, 1.0, 0.0]), jnp.ones((3, 4)).at[:, 1:].set(0.0)]
  _, state = model.apply(variables, x, masks, mutable=["intermediates"])
  inter = state["intermediates"]
  out0 = inter["conv_0_output"][0]
  # Layer 1 reads layer 0's masked output, while the sown output of layer 0 is the unmasked one.
  np.testing.assert_allclose(inter["conv_1_input"][0], out0 * masks[0], rtol=0, atol=0)
  assert float(jnp.abs(out0[..., 1]).sum()) > 0
  features = model.apply(variables, x, masks, return_features=True)
  np.testing.assert_allclose(features[:, 1:], 0.0)
  np.testing.assert_allclose(features[:, 0], inter["conv_1_output"][0][..., 0].mean(1), rtol=1e-6)
  # An all-ones mask is the unmasked network.
  np.testing.assert_array_equal(model.apply(variables, x, [None, jnp.ones(4)]), model.apply(variables, x))


def test_bad_inputs_are_refused(key):
  model = CNN(features=(2,), num_classes=3)
  variables = model.init(key, jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="`x` must have shape"):
    model.apply(variables, jnp.ones((4, 4, 1)))
  with pytest.raises(ValueError, match="one entry per layer"):
    model.apply(variables, jnp.ones((1, 4, 4, 1)), [None, None])
  with pytest.raises(ValueError, match=r"channel_masks\[0\]"):
    model.apply(variables, jnp.ones((1, 4, 4, 1)), [jnp.ones(3)])
