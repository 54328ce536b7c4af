"""The synthetic completion problems and metrics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.linalg import completion_data as cd


def test_random_low_rank_is_an_svd():
  mat = cd.random_low_rank(jax.random.key(0), (30, 20), 4, condition_number=8.0)
  s = np.linalg.svd(np.asarray(mat.dense(), np.float64), compute_uv=False)
  np.testing.assert_allclose(s[:4], [1.0, 0.5, 0.25, 0.125], rtol=1e-5)
  assert s[4] < 1e-5
  np.testing.assert_allclose(mat.left.T @ mat.left, np.eye(4), atol=1e-5)
  rows, cols = jnp.array([0, 5, 29]), jnp.array([3, 0, 19])
  np.testing.assert_allclose(mat.entries(rows, cols), mat.dense()[rows, cols], atol=1e-6)


def test_uniform_mask_distinct_in_range_and_uniform():
  rows, cols = cd.uniform_mask(jax.random.key(1), (40, 50), 1000)
  flat = np.asarray(rows) * 50 + np.asarray(cols)
  assert len(set(flat.tolist())) == 1000 and np.all(np.diff(flat) > 0)
  assert rows.min() >= 0 and rows.max() < 40 and cols.min() >= 0 and cols.max() < 50
  # Each row holds Hypergeometric(2000, 50, 1000) entries: mean 25, sd ~3.5.
  counts = np.bincount(np.asarray(rows), minlength=40)
  assert abs(counts.mean() - 25) < 1e-9 and 2.0 < counts.std() < 5.0


def test_relative_error_and_incoherence_against_numpy():
  mat = cd.random_low_rank(jax.random.key(2), (37, 11), 3)
  u = jax.random.normal(jax.random.key(3), (37, 2))
  v = jax.random.normal(jax.random.key(4), (11, 2))
  dense = np.asarray(mat.dense())
  ref = np.linalg.norm(np.asarray(u @ v.T) - dense) / np.linalg.norm(dense)
  np.testing.assert_allclose(cd.relative_error(u, v, mat, block_rows=8), ref, rtol=1e-5)
  eye = jnp.eye(8)[:, :2]  # the most coherent factor: μ = √(m/k)
  np.testing.assert_allclose(cd.incoherence(eye), 2.0, rtol=1e-6)
  flat = jnp.ones((8, 1)) / jnp.sqrt(8.0)  # the least coherent: μ = 1
  np.testing.assert_allclose(cd.incoherence(flat), 1.0, rtol=1e-6)
  assert float(cd.subspace_distance(eye, jnp.eye(8)[:, 2:4])) == pytest.approx(1.0)


def test_bad_input():
  with pytest.raises(ValueError, match="`a` and `b` must be \\(n, k\\) bases of one space"):
    cd.subspace_distance(jnp.ones((5, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="`rank` must be"):
    cd.random_low_rank(jax.random.key(0), (5, 4), 5)
  with pytest.raises(ValueError, match="`num_observed` must be"):
    cd.uniform_mask(jax.random.key(0), (5, 4), 21)
  with pytest.raises(ValueError, match="`condition_number` must be"):
    cd.random_low_rank(jax.random.key(0), (5, 4), 2, condition_number=0.5)


@pytest.mark.parametrize(
  ("args", "match"),
  [
    (((5, 4), 5, 10), "`rank` must be"),
    (((5, 4), 2, 21), "`num_observed` must be"),
    (((5, 4), 2, 0), "`num_observed` must be"),
    (((5,), 1, 3), "`shape` must be a pair"),
    (((5, 0), 1, 3), "`shape` must be an int >= 1"),
  ],
)
def test_bad_input_make_problem(args, match):
  with pytest.raises(ValueError, match=match):
    cd.make_problem(jax.random.key(0), *args)


def test_bad_input_incoherence_and_relative_error():
  with pytest.raises(ValueError, match="`factor` must be an \\(m, k\\) matrix"):
    cd.incoherence(jnp.ones(8))
  with pytest.raises(ValueError, match="`factor` must be an \\(m, k\\) matrix"):
    cd.incoherence(jnp.ones((8, 0)))
  mat = cd.random_low_rank(jax.random.key(0), (6, 5), 2)
  u, v = mat.left * mat.singular_values, mat.right
  with pytest.raises(ValueError, match="`u` and `v` must be \\(m, r\\) and \\(n, r\\)"):
    cd.relative_error(u, v[:4], mat)
  with pytest.raises(ValueError, match="`u` and `v` must be \\(m, r\\) and \\(n, r\\)"):
    cd.relative_error(u[:, 0], v[:, 0], mat)
  with pytest.raises(TypeError, match="`matrix` must be a LowRankMatrix"):
    cd.relative_error(u, v, mat.dense())
  with pytest.raises(ValueError, match="`block_rows` must be an int >= 1"):
    cd.relative_error(u, v, mat, block_rows=0)
