"""The cached pretrained classifier: data layouts, training, and the checkpoint round trip."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.data import digits
from toolkit.models import classifier
from toolkit.models.mlp import MLP

TINY = classifier.ClassifierRecipe(num_train=400, num_epochs=8, batch_size=50, learning_rate=3e-3)


def test_layouts_hold_the_same_standardised_digits():
  flat = classifier.classification_data("digits")
  image = classifier.classification_data("digits", layout="image")
  np.testing.assert_array_equal(image.x_train.reshape(flat.x_train.shape), flat.x_train)
  reference = digits.digits_split(jax.random.key(0), 1297)
  np.testing.assert_array_equal(flat.x_test, reference.x_test)
  np.testing.assert_array_equal(flat.y_train, reference.y_train)


def test_pretrained_is_trained_once_and_reloaded_bit_identical(tmp_path):
  model = MLP((32, 10), use_bias=True)
  first = classifier.pretrained_classifier(model, TINY, cache_dir=tmp_path)
  # Eight epochs on 400 digits already take a 32-unit MLP far above chance (10%).
  assert first.test_accuracy > 0.75
  again = classifier.pretrained_classifier(model, TINY, cache_dir=tmp_path)
  assert again.path == first.path and again.test_accuracy == first.test_accuracy
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(a, b)
  # The recorded accuracy is what the stored parameters score.
  assert classifier.accuracy(model, again.params, again.data.x_test, again.data.y_test) == again.test_accuracy
  # Another recipe is another checkpoint.
  other = dataclasses.replace(TINY, seed=1)
  assert classifier.fingerprint(model, other, "flat") != classifier.fingerprint(model, TINY, "flat")


def test_training_is_full_batch_gradient_descent_when_one_batch_covers_the_set():
  # With one batch per epoch the data order cannot matter: the trainer equals plain AdamW steps written out here.
  data = classifier.classification_data("digits", num_train=64)
  recipe = classifier.ClassifierRecipe(num_train=64, num_epochs=3, batch_size=64, learning_rate=1e-2)
  model = MLP((8, 10), use_bias=True)
  params = model.init(jax.random.split(jax.random.key(0))[0], jnp.asarray(data.x_train[:1]))["params"]
  opt = optax.adamw(optax.cosine_decay_schedule(1e-2, 3), weight_decay=recipe.weight_decay)
  state = opt.init(params)
  for _ in range(3):
    grads = jax.grad(
      lambda p: optax.losses.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, data.x_train), data.y_train
      ).mean()
    )(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  trained = classifier.train_classifier(model, data, recipe)
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused(tmp_path):
  with pytest.raises(ValueError, match="`dataset`"):
    classifier.classification_data("cifar")
  with pytest.raises(ValueError, match="`layout`"):
    classifier.classification_data("digits", layout="grid")
  with pytest.raises(TypeError, match="`recipe`"):
    classifier.pretrained_classifier(MLP((4, 10)), {"num_epochs": 1}, cache_dir=tmp_path)
  with pytest.raises(ValueError, match="batch_size"):
    classifier.train_classifier(
      MLP((4, 10)), classifier.classification_data(num_train=64), dataclasses.replace(TINY, batch_size=100)
    )


def test_accuracy_and_fingerprint_bad_arguments(key):
  model = MLP((4, 10))
  x = jax.random.normal(key, (3, 64))
  params = model.init(key, x)["params"]
  y = np.array([0, 1, 2], np.int32)
  predictions = np.argmax(np.asarray(model.apply({"params": params}, x)), -1)
  assert classifier.accuracy(model, params, x, y) == pytest.approx(np.mean(predictions == y))
  # Each of these gave an accuracy without an error: a float label never equals a class, labels of another shape
  # broadcast against the predictions, and a label outside the classes never matches.
  with pytest.raises(TypeError, match="`y` must hold integer class labels"):
    classifier.accuracy(model, params, x, y + 0.5)
  for bad in (y[:1], y[:, None]):
    with pytest.raises(ValueError, match="`y` must have the shape of the predictions"):
      classifier.accuracy(model, params, x, bad)
  for label in (-1, 10):
    with pytest.raises(ValueError, match=r"`y` must lie in \[0, 10\) \(the classes\)"):
      classifier.accuracy(model, params, x, np.r_[label, y[1:]].astype(np.int32))
  with pytest.raises(TypeError, match="`model`"):
    classifier.fingerprint("mlp", TINY, "flat")
  with pytest.raises(TypeError, match="`recipe`"):  # was a TypeError from dataclasses.asdict
    classifier.fingerprint(model, dataclasses.asdict(TINY), "flat")
  with pytest.raises(ValueError, match="`layout`"):  # any string used to hash to a checkpoint of its own
    classifier.fingerprint(model, TINY, "grid")
