"""Small image classifiers trained once and cached: the pretrained networks that pruning and distillation start from.

Lottery Jackpots (arXiv 2104.08700) searches masks on frozen pretrained weights, FTWT (arXiv 2110.08232) attaches
mask predictors to a pretrained backbone, and Dual-Head KD (arXiv 2411.08937) distils a pretrained teacher. Each
experiment, test and notebook asks ``pretrained_classifier`` for the same network and gets the same checkpoint,
trained on first use and stored under ``toolkit.cache.cache_dir("models")``.

Data are the shipped handwritten digits (``toolkit.data.digits``) and, when ``toolkit.data.mnist1d`` is present, the
procedural MNIST-1D signals; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization

from toolkit import _checks, cache
from toolkit.data import digits

_CHECKPOINT_VERSION = 1
DATASETS = ("digits", "mnist1d")
LAYOUTS = ("flat", "image")


@dataclasses.dataclass(frozen=True)
class ClassifierRecipe:
  """How a classifier is trained: AdamW with a cosine-decayed learning rate over ``num_epochs`` shuffled epochs.

  ``num_train`` is the size of the training split (``None``: 1297 digits, leaving 500 for the test set; 4000 MNIST-1D
  signals, leaving 1000).
  """

  dataset: str = "digits"
  num_train: int | None = None
  num_epochs: int = 60
  batch_size: int = 64
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  seed: int = 0


class ClassificationData(NamedTuple):
  """A train/test split: float32 inputs shaped for the model's layout and int32 labels."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


class PretrainedClassifier(NamedTuple):
  """A trained classifier's parameters, the data it was trained and tested on, and its accuracies."""

  params: Any
  data: ClassificationData
  train_accuracy: float
  test_accuracy: float
  seconds: float
  path: str


def classification_data(
  dataset: str = "digits", *, layout: str = "flat", num_train: int | None = None, seed: int = 0
) -> ClassificationData:
  """A standardised train/test split of ``dataset`` ("digits" or "mnist1d").

  ``layout="flat"`` gives (n, 64) digits or (n, 40) signals for an MLP; ``layout="image"`` gives (n, 8, 8, 1) digits or
  (n, 40, 1) signals for a ``CNN``.

  >>> data = classification_data("digits", layout="image")
  >>> data.x_train.shape, data.x_test.shape
  ((1297, 8, 8, 1), (500, 8, 8, 1))
  """
  if dataset not in DATASETS:
    raise ValueError(f"`dataset` must be one of {DATASETS}, got {dataset!r}.")
  if layout not in LAYOUTS:
    raise ValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
  if dataset == "digits":
    split = digits.digits_split(jax.random.key(seed), 1297 if num_train is None else num_train)
    shape = (8, 8, 1)
  else:
    from toolkit.data import mnist1d

    kwargs = {} if num_train is None else {"num_train": num_train}
    split = mnist1d.mnist1d_split(seed, **kwargs)
    shape = (split.x_train.shape[1], 1)

  def shaped(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x.reshape((x.shape[0], *shape)) if layout == "image" else x.reshape((x.shape[0], -1))

  return ClassificationData(
    shaped(split.x_train),
    np.asarray(split.y_train, np.int32),
    shaped(split.x_test),
    np.asarray(split.y_test, np.int32),
  )


def accuracy(model: nn.Module, params: Any, x: Any, y: Any, **apply_kwargs: Any) -> float:
  """The fraction of ``x`` that ``model`` with ``params`` classifies as ``y`` (``apply_kwargs`` go to ``apply``)."""
  logits = model.apply({"params": params}, jnp.asarray(x), **apply_kwargs)
  # A label of another shape would broadcast against the predictions, and one outside the classes (or a float)
  # would never match: either gives a wrong accuracy without an error.
  if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
    raise TypeError(f"`y` must hold integer class labels, got dtype {jnp.result_type(y)}.")
  if jnp.shape(y) != logits.shape[:-1]:
    raise ValueError(f"`y` must have the shape of the predictions for `x`, {logits.shape[:-1]}, got {jnp.shape(y)}.")
  _checks.check_ids(y, logits.shape[-1], "y", "the classes")
  return float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)))


def train_classifier(
  model: nn.Module, data: ClassificationData, recipe: ClassifierRecipe = ClassifierRecipe(), *, init_params: Any = None
) -> Any:
  """Trains ``model`` on ``data.x_train`` with softmax cross-entropy; returns the parameters.

  One jitted step per shuffled minibatch (the last incomplete batch of each epoch is dropped).
  """
  if recipe.batch_size < 1 or recipe.num_epochs < 1:
    raise ValueError(f"`recipe` needs batch_size ≥ 1 and num_epochs ≥ 1, got {recipe}.")
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  num_batches = x.shape[0] // recipe.batch_size
  if num_batches < 1:
    raise ValueError(f"`recipe.batch_size` ({recipe.batch_size}) exceeds the training set ({x.shape[0]}).")
  key_init, key_order = jax.random.split(jax.random.key(recipe.seed))
  params = model.init(key_init, x[:1])["params"] if init_params is None else init_params
  schedule = optax.cosine_decay_schedule(recipe.learning_rate, recipe.num_epochs * num_batches)
  optimizer = optax.adamw(schedule, weight_decay=recipe.weight_decay)

  def loss_fn(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
    logits = model.apply({"params": p}, xb)
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  @jax.jit
  def step(p: Any, s: Any, idx: jax.Array) -> tuple[Any, Any]:
    grads = jax.grad(loss_fn)(p, x[idx], y[idx])
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  # A Python loop over jitted steps rather than one lax.scan per epoch: XLA:CPU (jaxlib 0.10.2) runs a convolution
  # inside a while loop several hundred times slower than the same convolution called on its own.
  carry = (params, optimizer.init(params))
  for key in jax.random.split(key_order, recipe.num_epochs):
    order = jax.random.permutation(key, x.shape[0])[: num_batches * recipe.batch_size]
    for idx in order.reshape(num_batches, recipe.batch_size):
      carry = step(*carry, idx)
  return carry[0]


def fingerprint(model: nn.Module, recipe: ClassifierRecipe, layout: str) -> str:
  """A 16-hex-digit hash of the model's fields, the recipe, the layout and the checkpoint format version."""
  if not isinstance(model, nn.Module):
    raise TypeError(f"`model` must be a flax.linen.Module, got {type(model).__name__}.")
  if not isinstance(recipe, ClassifierRecipe):
    raise TypeError(f"`recipe` must be a ClassifierRecipe, got {type(recipe).__name__}.")
  if layout not in LAYOUTS:
    raise ValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
  blob = json.dumps(
    {"version": _CHECKPOINT_VERSION, "model": repr(model), "recipe": dataclasses.asdict(recipe), "layout": layout},
    sort_keys=True,
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_classifier(
  model: nn.Module,
  recipe: ClassifierRecipe = ClassifierRecipe(),
  *,
  layout: str = "flat",
  cache_dir: str | os.PathLike | None = None,
) -> PretrainedClassifier:
  """``model`` trained by ``recipe`` on its dataset in ``layout``, trained on first use and cached on disk.

  The checkpoint ``<cache_dir>/classifier_<fingerprint>.msgpack`` holds the parameters and the record (accuracies,
  training time); it is written atomically, so a present file is a complete checkpoint. ``cache_dir=None`` means
  ``toolkit.cache.cache_dir("models")``.
  """
  if not isinstance(recipe, ClassifierRecipe):
    raise TypeError(f"`recipe` must be a ClassifierRecipe, got {type(recipe).__name__}.")
  data = classification_data(recipe.dataset, layout=layout, num_train=recipe.num_train, seed=recipe.seed)
  directory = cache.cache_dir("models") if cache_dir is None else pathlib.Path(cache_dir)
  path = directory / f"classifier_{fingerprint(model, recipe, layout)}.msgpack"
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(data.x_train[:1]))["params"])
  if path.exists():
    stored = serialization.msgpack_restore(path.read_bytes())
    params = stored["params"]
    if jax.tree.structure(params) != jax.tree.structure(template) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template))
    ):
      raise ValueError(f"checkpoint {path} does not match the parameters of {model}.")
    record = json.loads(stored["record"])
    logging.info("loaded the pretrained classifier %s", path)
    return PretrainedClassifier(jax.tree.map(jnp.asarray, params), data, *record, str(path))
  logging.info("training the classifier %s on %s into %s", model, recipe.dataset, path)
  start = time.perf_counter()
  params = jax.block_until_ready(train_classifier(model, data, recipe))
  seconds = time.perf_counter() - start
  record = [
    accuracy(model, params, data.x_train, data.y_train),
    accuracy(model, params, data.x_test, data.y_test),
    seconds,
  ]
  stored = {"params": jax.tree.map(np.asarray, params), "record": json.dumps(record)}
  cache.write_atomically(path, serialization.msgpack_serialize(stored))
  return PretrainedClassifier(params, data, *record, str(path))
