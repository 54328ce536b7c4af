"""MNIST-1D, generated procedurally in JAX: ten one-dimensional digit templates of 12 points, each padded,
stretched, scaled, shifted, filled with correlated noise where it was padded, perturbed with iid noise, sheared and
resampled to 40 points, so that nothing is downloaded at run time.

Greydanus and Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024, arXiv 2011.14439 (the dataset's
construction; its benchmark table gives logistic regression 32% test accuracy, MLP 68%, CNN 94%).
The construction, its default arguments and the ten templates follow the authors' reference code, the
``mnist1d`` package (github.com/greydanus/mnist1d: ``get_dataset_args``, ``get_templates`` and ``make_dataset``
in ``mnist1d/data.py``, the transforms in ``mnist1d/transform.py``); the templates below are transcribed from
``get_templates``. The random numbers come from ``jax.random`` rather than numpy's global state, so a seed gives
a different (identically distributed) draw than the reference's ``seed=42`` pickle.

Our choices where the reference leaves room:

- The reference tells template from padding by ``x != 0`` after adding ``eps = 1e-8`` to the template; we mark the
  stretched positions that fall before the end of the padded template's last interval (``position < template_len``),
  which is the same set except for a value that happens to interpolate to exactly zero.
- ``make_mnist1d`` draws labels ``arange(n) % num_classes`` in random order (balanced, as the reference's
  ``num_samples // 10`` per class) and returns the raw signals; ``mnist1d_split`` splits one such set into
  class-balanced train and test parts and standardises with the *training* set's scalar mean and standard
  deviation (the reference uses the whole set's).
- All randomness comes from one ``jax.random.uniform`` draw (normals by Box-Muller), because each separate
  ``jax.random`` call adds about a second of XLA:CPU compile time.

Checked against the reference: fed numpy's ``seed=42`` draws, the reference pipeline written with scipy (the
oracle of ``tests/data/test_mnist1d.py``) reproduces the package's published dataset to 1e-15, and
``apply_transform`` matches that oracle on the same draws; on our draws, logistic regression reaches 32.3% test
accuracy (mean of seeds 0-4; 32.9% on the published dataset).
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

# Rows are the digits 0..9, transcribed from ``get_templates`` in the reference code (mnist1d/data.py).
RAW_TEMPLATES = np.array(
  [
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
  ],
  dtype=np.float64,
)
NUM_MNIST1D_CLASSES = 10
# The templates' own abscissa runs over [-5/6, 5/6]; stretching and resampling keep that range.
GRID_HALF_WIDTH = 5.0 / 6.0


def mnist1d_templates() -> np.ndarray:
  """The ten templates as the reference normalises them: each row centred, scaled to unit standard deviation,
  shifted to start (and end) at 0, and divided by 6. Returns float32 ``(10, 12)``.

  >>> mnist1d_templates().shape, float(np.abs(mnist1d_templates()[:, [0, -1]]).max())
  ((10, 12), 0.0)
  """
  x = RAW_TEMPLATES - RAW_TEMPLATES.mean(1, keepdims=True)
  x = x / x.std(1, keepdims=True)
  x = x - x[:, :1]
  return (x / 6.0).astype(np.float32)


class Mnist1d(NamedTuple):
  """Signals ``x`` float32 ``(n, final_seq_length)``, labels ``y`` int32 ``(n,)`` and the common sample grid ``t``
  float32 ``(final_seq_length,)`` (from -5/6 to 5/6, the abscissa to plot the signals against)."""

  x: jax.Array
  y: jax.Array
  t: jax.Array


class Mnist1dSplit(NamedTuple):
  """Train and test parts of MNIST-1D as numpy arrays: ``x_*`` float32 ``(n, 40)``, ``y_*`` int32 ``(n,)``."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


class Mnist1dTransform(NamedTuple):
  """The random draws that turn one template into one sample (see ``apply_transform``); ``sample_transforms``
  gives each field a leading axis of samples.

  Attributes:
    num_pad: int32 ``()``, zeros appended to the template before it is stretched, in ``[padding[0], padding[1]]``.
    scale: float32 ``()``, the amplitude factor ``1 + scale_coeff * (u - 1/2)``.
    shift: int32 ``()``, the circular shift to the right, in ``[0, max_translation)``.
    corr_noise: float32 ``(template_len + padding[1],)``, standard normal before smoothing and scaling.
    iid_noise: float32 ``(template_len + padding[1],)``, standard normal before scaling.
    shear: float32 ``()``, the slope ``shear_scale * (u - 1/2)`` subtracted across the signal.
  """

  num_pad: jax.Array
  scale: jax.Array
  shift: jax.Array
  corr_noise: jax.Array
  iid_noise: jax.Array
  shear: jax.Array


def sample_transforms(
  key: jax.Array,
  num_samples: int,
  *,
  template_len: int = 12,
  padding: tuple[int, int] = (36, 60),
  scale_coeff: float = 0.4,
  max_translation: int = 48,
  shear_scale: float = 0.75,
) -> Mnist1dTransform:
  """Draws ``num_samples`` transforms (each field gets a leading axis) with the reference's distributions
  (``mnist1d/transform.py``): ``num_pad = low + floor(u (high - low + 1))``, ``scale = 1 + scale_coeff (u - 1/2)``,
  ``shift = floor(u max_translation)``, ``shear = shear_scale (u - 1/2)`` and standard normal noise vectors.

  Example:
    >>> tr = sample_transforms(jax.random.key(0), 3)
    >>> tr.corr_noise.shape, bool(((36 <= tr.num_pad) & (tr.num_pad <= 60)).all())
    ((3, 72), True)
  """
  num_samples = _checks.check_int(num_samples, "num_samples", 1)
  template_len = _checks.check_int(template_len, "template_len", 2)
  padding = _check_transform_args(template_len, padding, scale_coeff, max_translation, shear_scale)
  length = template_len + padding[1]
  u = jax.random.uniform(key, (num_samples, _num_uniforms(length)))
  return _transforms_from_uniforms(u, padding, scale_coeff, max_translation, shear_scale)


def _num_uniforms(length: int) -> int:
  return 4 + 2 * length


def _transforms_from_uniforms(u, padding, scale_coeff, max_translation, shear_scale) -> Mnist1dTransform:
  # One uniform draw feeds everything (normals by Box-Muller) because each jax.random call compiles a threefry
  # kernel, which costs about a second of XLA:CPU compile time.
  length = (u.shape[-1] - 4) // 2
  radius = jnp.sqrt(-2.0 * jnp.log1p(-u[:, 4 : 4 + length]))  # 1 - u lies in (0, 1]
  angle = 2.0 * jnp.pi * u[:, 4 + length :]
  num_pad = padding[0] + jnp.floor(u[:, 0] * (padding[1] - padding[0] + 1)).astype(jnp.int32)
  shift = jnp.floor(u[:, 2] * max_translation).astype(jnp.int32)
  return Mnist1dTransform(
    num_pad=jnp.minimum(num_pad, padding[1]),
    scale=1.0 + scale_coeff * (u[:, 1] - 0.5),
    shift=jnp.minimum(shift, max_translation - 1),
    corr_noise=radius * jnp.cos(angle),
    iid_noise=radius * jnp.sin(angle),
    shear=shear_scale * (u[:, 3] - 0.5),
  )


def gaussian_smoothing_matrix(length: int, sigma: float = 2.0, truncate: float = 4.0) -> np.ndarray:
  """The ``(length, length)`` matrix of a Gaussian filter of standard deviation ``sigma`` (in samples), cut at
  ``truncate * sigma`` and mirrored at the ends (``d c b a | a b c d``), as ``scipy.ndimage.gaussian_filter`` with
  its default ``mode="reflect"``, which the reference uses for the correlated noise."""
  length = _checks.check_int(length, "length", 1)
  _checks.check_positive(sigma, "sigma")
  _check_nonnegative("truncate", truncate)  # a negative one leaves no weights, hence 0 / 0
  radius = int(truncate * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1)
  weights = np.exp(-0.5 * (offsets / sigma) ** 2)
  weights /= weights.sum()
  rows = np.repeat(np.arange(length), offsets.size)
  cols = (np.arange(length)[:, None] + offsets[None, :]).ravel()
  period = 2 * length  # the mirrored signal repeats with this period
  cols = np.mod(cols, period)
  cols = np.where(cols >= length, period - 1 - cols, cols)
  matrix = np.zeros((length, length))
  np.add.at(matrix, (rows, cols), np.tile(weights, length))
  return matrix.astype(np.float32)


def apply_transform(
  template: jax.Array,
  transform: Mnist1dTransform,
  *,
  corr_noise_scale: float = 0.25,
  iid_noise_scale: float = 2e-2,
  final_seq_length: int = 40,
  corr_noise_sigma: float = 2.0,
) -> jax.Array:
  """Turns one template ``(template_len,)`` into one sample ``(final_seq_length,)``, in the reference's order: pad
  with ``num_pad`` zeros and stretch to ``template_len + padding[1]`` points, scale, shift circularly, replace the
  padding by smoothed Gaussian noise, add iid noise, subtract a linear shear, resample linearly to
  ``final_seq_length`` points."""
  if jnp.ndim(template) != 1 or jnp.shape(template)[0] < 2:
    raise ValueError(f"`template` must have shape (template_len >= 2,), got {jnp.shape(template)}.")
  if not isinstance(transform, Mnist1dTransform):
    raise TypeError(f"`transform` must be a Mnist1dTransform (from sample_transforms), got {type(transform).__name__}.")
  template_len = template.shape[-1]
  length = transform.corr_noise.shape[-1] if jnp.ndim(transform.corr_noise) == 1 else 0
  if length < template_len or jnp.shape(transform.iid_noise) != (length,):
    raise ValueError(
      f"`transform` must hold (length,) noise vectors with length >= template_len = {template_len} (one sample of "
      f"sample_transforms), got {jnp.shape(transform.corr_noise)} and {jnp.shape(transform.iid_noise)}."
    )
  _checks.check_int(final_seq_length, "final_seq_length", 2)
  _checks.check_positive(corr_noise_sigma, "corr_noise_sigma")
  for name, value in (("corr_noise_scale", corr_noise_scale), ("iid_noise_scale", iid_noise_scale)):
    if not _checks.is_traced(value):
      _check_nonnegative(name, np.asarray(value).item() if np.ndim(value) == 0 else value)
  padded_len = template_len + transform.num_pad
  index = jnp.arange(length)
  position = index * (padded_len - 1) / (length - 1)  # where each stretched point falls on the padded template
  padded = jnp.concatenate([template, jnp.zeros((length - template_len,), template.dtype)])
  x = _linear_interpolation(position, length) @ padded
  # Exact integer test of position < template_len (what the reference's `x != 0` after `+ eps` amounts to).
  is_signal = index * (padded_len - 1) < template_len * (length - 1)
  x = jnp.roll(x * transform.scale, transform.shift)
  is_signal = jnp.roll(is_signal, transform.shift)
  smoothing = jnp.asarray(gaussian_smoothing_matrix(length, corr_noise_sigma))
  x = jnp.where(is_signal, x, corr_noise_scale * (smoothing @ transform.corr_noise))
  x = x + iid_noise_scale * transform.iid_noise
  x = x - transform.shear * jnp.linspace(-0.5, 0.5, length)
  return _linear_interpolation(jnp.linspace(0.0, length - 1.0, final_seq_length), length) @ x


def _linear_interpolation(position: jax.Array, length: int) -> jax.Array:
  """The matrix that interpolates a signal given at ``0, 1, ..., length - 1`` linearly at ``position``: the hat
  function ``max(0, 1 - |position - i|)``, which compiles much faster on CPU than ``jnp.interp``'s search."""
  return jnp.maximum(0.0, 1.0 - jnp.abs(position[:, None] - jnp.arange(length)[None, :]))


@functools.partial(
  jax.jit,
  static_argnames=("num_samples", "padding", "max_translation", "final_seq_length", "shuffle_seq", "corr_noise_sigma"),
)
def _generate(
  key,
  templates,
  scale_coeff,
  corr_noise_scale,
  iid_noise_scale,
  shear_scale,
  *,
  num_samples,
  padding,
  max_translation,
  final_seq_length,
  shuffle_seq,
  corr_noise_sigma,
):
  num_classes, template_len = templates.shape
  num_per_sample = _num_uniforms(template_len + padding[1])
  u = jax.random.uniform(key, (num_samples * (1 + num_per_sample) + final_seq_length,))
  u_labels, u_samples, u_seq = jnp.split(u, [num_samples, num_samples * (1 + num_per_sample)])
  # The rank of iid uniforms is a uniform random permutation (jax.random.permutation compiles far slower).
  y = (jnp.argsort(u_labels) % num_classes).astype(jnp.int32)
  transforms = _transforms_from_uniforms(
    u_samples.reshape(num_samples, num_per_sample), padding, scale_coeff, max_translation, shear_scale
  )
  apply = functools.partial(
    apply_transform,
    corr_noise_scale=corr_noise_scale,
    iid_noise_scale=iid_noise_scale,
    final_seq_length=final_seq_length,
    corr_noise_sigma=corr_noise_sigma,
  )
  x = jax.vmap(apply)(templates[y], transforms)
  if shuffle_seq:
    x = x[:, jnp.argsort(u_seq)]
  t = jnp.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, final_seq_length, dtype=jnp.float32)
  return Mnist1d(x.astype(jnp.float32), y, t)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_nonnegative(name, value, upper=None):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
  if upper is not None and value >= upper:
    raise ValueError(f"`{name}` must be < {upper}, got {value!r}.")


def _check_transform_args(template_len, padding, scale_coeff, max_translation, shear_scale) -> tuple[int, int]:
  """The arguments of the random transforms, checked; returns ``padding`` as a pair of Python ints."""
  if (
    not isinstance(padding, tuple | list)
    or len(padding) != 2
    or not all(_is_int(p) for p in padding)
    or not 0 <= padding[0] <= padding[1]
  ):
    raise ValueError(f"`padding` must be a pair of ints (low, high) with 0 <= low <= high, got {padding!r}.")
  padding = (int(padding[0]), int(padding[1]))
  length = template_len + padding[1]
  if not _is_int(max_translation) or not 1 <= max_translation <= length:
    raise ValueError(
      f"`max_translation` must be an int in [1, {length}] (template_len + padding[1]; 1 means no shift), "
      f"got {max_translation!r}."
    )
  _check_nonnegative("scale_coeff", scale_coeff, upper=2.0)
  _check_nonnegative("shear_scale", shear_scale)
  return padding


def make_mnist1d(
  key_or_seed: jax.Array | int,
  num_samples: int = 5000,
  *,
  padding: tuple[int, int] = (36, 60),
  scale_coeff: float = 0.4,
  max_translation: int = 48,
  corr_noise_scale: float = 0.25,
  iid_noise_scale: float = 2e-2,
  shear_scale: float = 0.75,
  final_seq_length: int = 40,
  shuffle_seq: bool = False,
  corr_noise_sigma: float = 2.0,
  templates: np.ndarray | None = None,
) -> Mnist1d:
  """Generates ``num_samples`` MNIST-1D signals (Greydanus and Kobak, ICML 2024, arXiv 2011.14439, Sec. 2).

  The defaults are the paper's (``get_dataset_args`` of the reference code, github.com/greydanus/mnist1d). Each
  sample takes its class's template, appends ``padding[0]..padding[1]`` zeros (uniform), stretches the result to
  ``template_len + padding[1]`` points, multiplies it by ``1 + scale_coeff * (u - 1/2)``, shifts it circularly by
  ``0..max_translation - 1`` points, replaces the padded part by Gaussian noise of scale ``corr_noise_scale``
  smoothed with a Gaussian filter of ``corr_noise_sigma`` points, adds iid Gaussian noise of scale
  ``iid_noise_scale``, subtracts the ramp ``shear_scale * (u - 1/2) * linspace(-1/2, 1/2)`` and resamples linearly
  to ``final_seq_length`` points. The signals are not standardised (``mnist1d_split`` does that).

  Args:
    key_or_seed: a ``jax.random`` key, or a Python int seed for ``jax.random.key``.
    num_samples: number of signals; the labels are ``arange(num_samples) % num_classes`` in random order, so the
      classes are balanced (exactly when ``num_samples`` is a multiple of the number of classes).
    padding: ``(low, high)``, the range of the number of zeros appended to a template (inclusive).
    scale_coeff: width of the uniform amplitude factor around 1, in ``[0, 2)``.
    max_translation: the shift is uniform on ``0..max_translation - 1`` (1 disables it); at most
      ``template_len + padding[1]``.
    corr_noise_scale: standard deviation of the noise before smoothing (0 fills the padding with zeros).
    iid_noise_scale: standard deviation of the iid noise.
    shear_scale: width of the uniform shear slope around 0.
    final_seq_length: number of points of each signal.
    shuffle_seq: permute the points of every signal by one common random permutation (the paper's "shuffled"
      variant).
    corr_noise_sigma: standard deviation, in stretched points, of the Gaussian filter of the correlated noise.
    templates: ``(num_classes, template_len)`` templates; ``None`` for ``mnist1d_templates()``.

  Returns:
    ``Mnist1d(x, y, t)``: ``x`` float32 ``(num_samples, final_seq_length)``, ``y`` int32 ``(num_samples,)`` and the
    sample grid ``t`` float32 ``(final_seq_length,)``.

  Example:
    >>> data = make_mnist1d(0, num_samples=50)
    >>> data.x.shape, data.x.dtype, np.bincount(data.y).tolist(), data.t.shape
    ((50, 40), dtype('float32'), [5, 5, 5, 5, 5, 5, 5, 5, 5, 5], (40,))
  """
  if _is_int(key_or_seed):
    if key_or_seed < 0:
      raise ValueError(f"`key_or_seed` as a seed must be an int >= 0, got {key_or_seed!r}.")
    key = jax.random.key(int(key_or_seed))
  elif isinstance(key_or_seed, jax.Array):
    key = key_or_seed
  else:
    raise TypeError(f"`key_or_seed` must be a jax.random key or a Python int seed, got {type(key_or_seed).__name__}.")
  templates = mnist1d_templates() if templates is None else templates
  templates = np.asarray(templates)
  if templates.ndim != 2 or templates.shape[0] < 2 or templates.shape[1] < 2:
    raise ValueError(f"`templates` must have shape (num_classes >= 2, template_len >= 2), got {templates.shape}.")
  if not np.all(np.isfinite(templates)):
    raise ValueError("`templates` must be finite.")
  template_len = templates.shape[1]
  if not _is_int(num_samples) or num_samples < 1:
    raise ValueError(f"`num_samples` must be an int >= 1, got {num_samples!r}.")
  padding = _check_transform_args(template_len, padding, scale_coeff, max_translation, shear_scale)
  if not _is_int(final_seq_length) or final_seq_length < 2:
    raise ValueError(f"`final_seq_length` must be an int >= 2, got {final_seq_length!r}.")
  _check_nonnegative("corr_noise_scale", corr_noise_scale)
  _check_nonnegative("iid_noise_scale", iid_noise_scale)
  _check_nonnegative("corr_noise_sigma", corr_noise_sigma)
  if corr_noise_sigma == 0:
    raise ValueError("`corr_noise_sigma` must be > 0.")
  if not isinstance(shuffle_seq, bool):
    raise TypeError(f"`shuffle_seq` must be a bool, got {type(shuffle_seq).__name__}.")
  return _generate(
    key,
    jnp.asarray(templates, jnp.float32),
    float(scale_coeff),
    float(corr_noise_scale),
    float(iid_noise_scale),
    float(shear_scale),
    num_samples=int(num_samples),
    padding=padding,
    max_translation=int(max_translation),
    final_seq_length=int(final_seq_length),
    shuffle_seq=shuffle_seq,
    corr_noise_sigma=float(corr_noise_sigma),
  )


def mnist1d_split(seed: int = 0, *, num_train: int = 4000, num_test: int = 1000, standardize: bool = True, **kwargs):
  """MNIST-1D's train/test split (4000/1000 by default, as the paper's), class-balanced in each part.

  Greydanus and Kobak, ICML 2024, arXiv 2011.14439; reference code github.com/greydanus/mnist1d. One set of
  ``num_train + num_test`` signals is drawn with ``make_mnist1d(seed, ...)``; within each class the first signals
  (in the set's random order) go to training, in numbers that balance the classes, and the rest to test. With
  ``standardize`` both parts are shifted and scaled by the training signals' scalar mean and standard deviation
  (the reference standardises by the whole set's, a negligible difference).

  Args:
    seed: a Python int seed; the same seed gives the same split.
    num_train: number of training signals (balanced exactly when a multiple of 10).
    num_test: number of test signals.
    standardize: centre and scale to unit standard deviation as above.
    **kwargs: passed to ``make_mnist1d`` (``shuffle_seq=True``, the noise scales, ...).

  Returns:
    ``Mnist1dSplit(x_train, y_train, x_test, y_test)`` numpy arrays, ``x_*`` float32 ``(n, final_seq_length)`` and
    ``y_*`` int32 ``(n,)``.

  Example:
    >>> s = mnist1d_split(0, num_train=200, num_test=100)
    >>> s.x_train.shape, s.x_test.shape, np.bincount(s.y_test).tolist(), round(float(s.x_train.std()), 3)
    ((200, 40), (100, 40), [10, 10, 10, 10, 10, 10, 10, 10, 10, 10], 1.0)
  """
  if not _is_int(seed) or seed < 0:
    raise ValueError(f"`seed` must be an int >= 0, got {seed!r}.")
  if not _is_int(num_train) or num_train < 1:
    raise ValueError(f"`num_train` must be an int >= 1, got {num_train!r}.")
  if not _is_int(num_test) or num_test < 1:
    raise ValueError(f"`num_test` must be an int >= 1, got {num_test!r}.")
  data = make_mnist1d(seed, num_train + num_test, **kwargs)
  x, y = np.asarray(data.x), np.asarray(data.y)
  templates = kwargs.get("templates")
  num_classes = NUM_MNIST1D_CLASSES if templates is None else np.asarray(templates).shape[0]
  quota = num_train // num_classes + (np.arange(num_classes) < num_train % num_classes)
  rank = np.zeros_like(y)  # rank of each signal among those of its class, in the set's order
  for c in range(num_classes):
    rank[y == c] = np.arange(np.sum(y == c))
  train = rank < quota[y]
  x_train, x_test = x[train], x[~train]
  if standardize:
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  return Mnist1dSplit(x_train.astype(np.float32), y[train], x_test.astype(np.float32), y[~train])
