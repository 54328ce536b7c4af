"""Voronoi losses D₁/D₂ and the expected Hellinger distance (arXiv 2309.13850) against oracles.

Oracles: a NumPy brute force of the losses written with loops, their invariances (permutation, gating translation),
D(G*, G*) = 0, and the closed-form Hellinger distance between two Gaussians.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.stats import topk_moe as tm
from toolkit.stats import voronoi as vo

TRUTH = tm.topk_moe_params(
  [0.5, 0.0, -0.5], [[-2.0, 0.1], [0.0, 1.0], [2.0, -0.5]], [[-1.0, 0.0], [0.5, 0.3], [2.0, 1.0]], [1.0, -1.0, 0.5],
  [0.3, 0.2, 0.4],
)  # fmt: skip


def brute_force_loss(p, t, over):
  """The losses with loops, in float64, including the translation convention of ``align_translation``."""
  p = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
  t = {k: np.asarray(v, np.float64) for k, v in t._asdict().items()}
  mass, mass_t = np.exp(p["gate_bias"]), np.exp(t["gate_bias"])
  mass = mass * mass_t.sum() / mass.sum()
  b1 = p["gate_weight"] - (mass / mass.sum()) @ p["gate_weight"] + (mass_t / mass_t.sum()) @ t["gate_weight"]

  def atom(g, b1, i):
    return np.concatenate([b1[i], g["expert_weight"][i], [g["expert_bias"][i], g["variance"][i]]])

  k, k_t = len(mass), len(mass_t)
  cell = [int(np.argmin([np.linalg.norm(atom(p, b1, i) - atom(t, t["gate_weight"], j)) for j in range(k_t)]))
          for i in range(k)]  # fmt: skip
  total = 0.0
  for j in range(k_t):
    members = [i for i in range(k) if cell[i] == j]
    r = {1: 1, 2: 4, 3: 6}[len(members)] if (over and len(members) > 1) else 1
    for i in members:
      total += mass[i] * (
        np.linalg.norm(b1[i] - t["gate_weight"][j]) ** r
        + abs(p["expert_bias"][i] - t["expert_bias"][j]) ** r
        + np.linalg.norm(p["expert_weight"][i] - t["expert_weight"][j]) ** (r / 2 if r > 1 else 1)
        + abs(p["variance"][i] - t["variance"][j]) ** (r / 2 if r > 1 else 1)
      )
    total += abs(sum(mass[i] for i in members) - mass_t[j])
  return total


def _noisy(key, params, scale):
  return tm.perturb(key, params, scale)


def _split(params, j, key, scale=0.05):
  """Over-specified: atom j split into two halves, then perturbed."""
  half = params.gate_bias[j] - jnp.log(2.0)
  extra = jax.tree.map(lambda leaf: leaf[j : j + 1], params)._replace(gate_bias=half[None])
  merged = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), params, extra)
  return _noisy(key, merged._replace(gate_bias=merged.gate_bias.at[j].set(half)), scale)


def test_zero_at_truth():
  assert float(vo.voronoi_loss_exact(TRUTH, TRUTH)) == pytest.approx(0.0, abs=1e-6)
  assert float(vo.voronoi_loss_over(TRUTH, TRUTH)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_exact_matches_brute_force(seed):
  p = _noisy(jax.random.key(seed), TRUTH, 0.3)
  np.testing.assert_allclose(vo.voronoi_loss_exact(p, TRUTH), brute_force_loss(p, TRUTH, False), rtol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_over_matches_brute_force(seed):
  p = _split(TRUTH, seed % 3, jax.random.key(seed), 0.1)
  np.testing.assert_allclose(vo.voronoi_loss_over(p, TRUTH), brute_force_loss(p, TRUTH, True), rtol=1e-4)
  np.testing.assert_allclose(vo.voronoi_loss_exact(p, TRUTH), brute_force_loss(p, TRUTH, False), rtol=1e-4)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
  seed=st.integers(0, 2**30),
  c0=st.floats(-3, 3),
  c1=st.floats(-3, 3),
  c2=st.floats(-3, 3),
  perm=st.permutations(range(3)),
)
def test_invariances(seed, c0, c1, c2, perm):
  """Permuting the atoms and translating the gating (β0 + c0, β1 + (c1, c2)) changes neither loss."""
  p = _noisy(jax.random.key(seed), TRUTH, 0.2)
  moved = jax.tree.map(lambda leaf: leaf[np.asarray(perm)], p)
  moved = moved._replace(gate_bias=moved.gate_bias + c0, gate_weight=moved.gate_weight + jnp.array([c1, c2]))
  for loss in (vo.voronoi_loss_exact, vo.voronoi_loss_over):
    np.testing.assert_allclose(loss(moved, TRUTH), loss(p, TRUTH), rtol=1e-4, atol=1e-5)
  true_perm = jax.tree.map(lambda leaf: leaf[np.asarray(perm)], TRUTH)
  np.testing.assert_allclose(vo.voronoi_loss_exact(p, true_perm), vo.voronoi_loss_exact(p, TRUTH), rtol=1e-4)


def test_translation_moves_no_density():
  """The invariance the losses quotient out is real: the translated model has the same density."""
  x = jax.random.uniform(jax.random.key(0), (100, 2), minval=-1, maxval=1)
  y = jnp.linspace(-3, 3, 100)
  moved = TRUTH._replace(gate_bias=TRUTH.gate_bias + 1.3, gate_weight=TRUTH.gate_weight - jnp.array([0.4, 2.0]))
  np.testing.assert_allclose(
    tm.log_density(moved, x, y, num_selected=2), tm.log_density(TRUTH, x, y, num_selected=2), atol=1e-5
  )


def test_over_loss_orders():
  """A 2-atom cell at distance δ in b: D₂ scales as δ⁴ (r̄(2) = 4), D₁ as δ."""
  for delta in (0.1, 0.01):
    g = TRUTH._replace(gate_bias=TRUTH.gate_bias.at[0].add(-jnp.log(2.0)))
    extra = jax.tree.map(lambda leaf: leaf[:1], g)
    g = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), g, extra)
    g = g._replace(expert_bias=g.expert_bias.at[0].add(delta).at[3].add(-delta))
    mass = float(jnp.exp(TRUTH.gate_bias[0]))
    np.testing.assert_allclose(vo.voronoi_loss_over(g, TRUTH), mass * delta**4, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(vo.voronoi_loss_exact(g, TRUTH), mass * delta, rtol=1e-3)


def test_cells():
  p = jax.tree.map(lambda leaf: leaf[np.array([2, 0, 1])], TRUTH)
  np.testing.assert_array_equal(vo.voronoi_cells(p, TRUTH), [2, 0, 1])


def test_hellinger_closed_form():
  """K = 1 experts on both sides: h² = 1 − √(2 s1 s2 / (s1² + s2²)) exp(−(μ1 − μ2)² / (4 (s1² + s2²)))."""
  a = tm.topk_moe_params([0.0], [[0.0]], [[1.0]], [0.0], [0.5])
  b = tm.topk_moe_params([0.0], [[0.0]], [[-0.5]], [0.3], [1.2])
  x = jnp.linspace(-1, 1, 7)[:, None]
  h = vo.conditional_hellinger(a, b, x, num_selected=1, true_num_selected=1)
  mu1, mu2 = np.asarray(x[:, 0]) * 1.0, np.asarray(x[:, 0]) * -0.5 + 0.3
  s1, s2 = np.sqrt(0.5), np.sqrt(1.2)
  h2 = 1 - np.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * np.exp(-((mu1 - mu2) ** 2) / (4 * (s1**2 + s2**2)))
  np.testing.assert_allclose(h, np.sqrt(h2), rtol=1e-4)
  np.testing.assert_allclose(vo.expected_hellinger(a, b, x, num_selected=1, true_num_selected=1), np.sqrt(h2).mean(),
                             rtol=1e-4)  # fmt: skip


def test_hellinger_zero_and_symmetric():
  x = jax.random.uniform(jax.random.key(0), (20, 2), minval=-1, maxval=1)
  p = _noisy(jax.random.key(1), TRUTH, 0.2)
  assert float(vo.expected_hellinger(TRUTH, TRUTH, x, num_selected=2, true_num_selected=2)) < 1e-6
  np.testing.assert_allclose(
    vo.conditional_hellinger(p, TRUTH, x, num_selected=2, true_num_selected=3),
    vo.conditional_hellinger(TRUTH, p, x, num_selected=3, true_num_selected=2),
    rtol=1e-5,
  )


def test_jit_and_vmap():
  ps = jax.vmap(lambda k: _noisy(k, TRUTH, 0.2))(jax.random.split(jax.random.key(0), 3))
  loss = jax.jit(vo.voronoi_loss_exact)
  batched = jax.vmap(lambda p: vo.voronoi_loss_exact(p, TRUTH))(ps)
  loop = [loss(tm.TopKMoEParams(*(leaf[i] for leaf in ps)), TRUTH) for i in range(3)]
  np.testing.assert_allclose(batched, loop, rtol=1e-6)
  p0 = tm.TopKMoEParams(*(leaf[0] for leaf in ps))
  np.testing.assert_allclose(jax.jit(vo.voronoi_loss_over)(p0, TRUTH), vo.voronoi_loss_over(p0, TRUTH), rtol=1e-6)


def test_bad_input():
  small = jax.tree.map(lambda leaf: leaf[:2], TRUTH)
  with pytest.raises(ValueError, match="at least as many"):
    vo.voronoi_loss_over(small, TRUTH)
  big = jax.tree.map(lambda a: jnp.concatenate([a, a]), TRUTH)
  with pytest.raises(ValueError, match="solvability_index"):
    vo.voronoi_loss_over(big, TRUTH)  # cells of up to 4 atoms: r̄(4) is not in the default table
  with pytest.raises(ValueError, match="dimension"):
    vo.voronoi_loss_exact(tm.topk_moe_params([0.0], [[0.0]], [[0.0]], [0.0], [1.0]), TRUTH)
  with pytest.raises(ValueError, match="num_points"):
    vo.expected_hellinger(TRUTH, TRUTH, jnp.zeros((2, 2)), num_selected=2, true_num_selected=2, num_points=1)


def test_min_num_selected_brute_force():
  """The rule equals the brute-force maximum over all K*-subsets of cells of their total cardinality."""
  import itertools

  p = _split(TRUTH, 1, jax.random.key(3), 0.02)
  p = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), p, jax.tree.map(lambda leaf: leaf[1:2], p))  # cells 3,1,1
  cells = np.asarray(vo.voronoi_cells(p, TRUTH))
  sizes = np.bincount(cells, minlength=3)
  np.testing.assert_array_equal(sizes, [1, 3, 1])
  for k_sel in (1, 2, 3):
    brute = max(sum(sizes[list(c)]) for c in itertools.combinations(range(3), k_sel))
    assert int(vo.min_num_selected(p, TRUTH, k_sel)) == brute
  with pytest.raises(ValueError, match="true_num_selected"):
    vo.min_num_selected(p, TRUTH, 4)


def test_cells_and_translation_bad_input():
  other_dim = tm.topk_moe_params([0.0], [[0.0]], [[0.0]], [0.0], [1.0])
  with pytest.raises(ValueError, match="`params` \\(d = 1\\) and `true_params` \\(d = 2\\) differ in dimension"):
    vo.align_translation(other_dim, TRUTH)
  with pytest.raises(TypeError, match="`true_params`"):
    vo.align_translation(TRUTH, TRUTH._asdict())
  with pytest.raises(TypeError, match="`params` must be a TopKMoEParams"):
    vo.voronoi_cells(tuple(TRUTH), TRUTH)
  with pytest.raises(ValueError, match="differ in dimension"):
    vo.voronoi_cells(TRUTH, other_dim)
  with pytest.raises(ValueError, match="`true_params`: `params.variance` must be > 0"):
    vo.voronoi_cells(TRUTH, TRUTH._replace(variance=-TRUTH.variance))


def test_conditional_hellinger_bad_input():
  kw = {"num_selected": 2, "true_num_selected": 2}
  x = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="`x` must have shape \\(m, d\\) with d = 2"):
    vo.conditional_hellinger(TRUTH, TRUTH, jnp.zeros((4, 3)), **kw)
  with pytest.raises(ValueError, match="`x` must have shape"):
    vo.conditional_hellinger(TRUTH, TRUTH, jnp.zeros(2), **kw)
  for num_sd in (0.0, -8.0, float("nan")):
    with pytest.raises(ValueError, match="`num_sd` must be a scalar > 0"):
      vo.conditional_hellinger(TRUTH, TRUTH, x, num_sd=num_sd, **kw)
  with pytest.raises(ValueError, match="`num_points`"):
    vo.conditional_hellinger(TRUTH, TRUTH, x, num_points=1, **kw)
  with pytest.raises(ValueError, match="differ in dimension"):
    vo.conditional_hellinger(TRUTH, tm.topk_moe_params([0.0], [[0.0]], [[0.0]], [0.0], [1.0]), x, **kw)
  with pytest.raises(ValueError, match="`num_selected`"):
    vo.conditional_hellinger(TRUTH, TRUTH, x, num_selected=4, true_num_selected=2)
