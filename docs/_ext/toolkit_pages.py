"""Writes the generated pages of the docs site before Sphinx reads its sources (``docs/generated/``, not in git).

The field pages come from ``FIELDS`` below (a paragraph per field, by hand) and from ``WORKSPACE.md`` and
``experiments/registry.py`` (each paper's modules, binary, notebook and reproduced figure), so the site says what
the workspace says. The API reference has one page per subpackage, the tutorials are the stored notebooks, and the
report page is ``reports/REPORT.md`` when ``make reproduce`` has written one.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import pkgutil
import re
import shutil

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
GENERATED = DOCS / "generated"


@dataclasses.dataclass(frozen=True)
class Field:
  slug: str
  title: str
  intro: str
  papers: tuple[str, ...]  # keys of experiments/registry.py


FIELDS = (
  Field(
    "ot",
    "Optimal transport",
    "Solvers, regularisers and benchmarks built on ott-jax's geometries, Sinkhorn and k-means: a sparse Newton "
    "solver for entropic OT, the Monge gap for learning transport maps, and the Light Schrödinger Bridge.",
    ("sinkhorn_newton_sparse", "monge_gap", "light_sb"),
  ),
  Field(
    "smc",
    "Sequential Monte Carlo",
    "Particle methods written as vmapped, jit-compiled scans with blackjax's `init`/`step` shape: resamplers, "
    "state-space models with Kalman oracles, PaRIS smoothing inside particle Gibbs, and Feynman-Kac correctors "
    "for annealing, guiding and multiplying diffusion models.",
    ("paris_particle_gibbs", "fkc"),
  ),
  Field(
    "kernels",
    "Low-bit kernels",
    "`jax.experimental.pallas` kernels with an XLA fallback behind one dispatch: KIVI's 2-bit KV cache and "
    "T-MAC's table-lookup matrix products.",
    ("kivi", "tmac"),
  ),
  Field(
    "quant",
    "Quantisation",
    "Post-training weight quantisation of flax models: round-to-nearest and GPTQ, with low-rank compensation.",
    ("zeroquant_v2",),
  ),
  Field(
    "losses",
    "Losses and optimisers",
    "Drop-in losses in the style of `optax.losses` and optax gradient transformations: StableMax and ⊥Grad "
    "for grokking, and the dual-head distillation loss.",
    ("grokking", "dual_head_kd"),
  ),
  Field(
    "alignment",
    "Preference alignment",
    "Direct alignment losses, their training loops on small transformers with a gold reward, and the indicators "
    "that the two papers study: over-optimisation and likelihood displacement.",
    ("daa_overoptimisation", "likelihood_displacement"),
  ),
  Field(
    "pruning",
    "Pruning",
    "Masks searched on frozen pretrained weights, and dynamic channel pruning with self-supervised mask predictors.",
    ("lottery_jackpot", "ftwt"),
  ),
  Field(
    "dynamics",
    "Training dynamics",
    "Grids of training runs as one sharded sweep (`toolkit.sweep`): double descent against the optimiser, and "
    "the regimes of SGD noise.",
    ("double_descent", "sgd_noise"),
  ),
  Field(
    "stats",
    "Statistics",
    "Estimators with their theory checked numerically: top-K sparse softmax gating mixtures, a tester-learner "
    "for halfspaces, PRESTO's shrinkage to proportional odds, and kernel density estimation in high dimension.",
    ("topk_moe", "halfspace_tester", "presto", "kde"),
  ),
  Field(
    "cluster",
    "Clustering",
    "Divisive clustering validated by Gaussian mixtures, and physics-informed clusters for local reduced-order "
    "bases, on ott-jax's k-means and mixtures.",
    ("ppp", "rom_cluster"),
  ),
  Field(
    "linalg",
    "Linear algebra",
    "Low-rank matrix completion by alternating minimisation with approximate, warm-started solves.",
    ("matrix_completion",),
  ),
  Field(
    "pde",
    "PDE-constrained inference",
    "Optimising a discrete loss of data and physics (ODIL) for tumour growth, with multigrid and L-BFGS.",
    ("gliodil",),
  ),
)

# Subpackages that hold no paper of their own: documented in the API reference and on the shared-pieces page.
SHARED_PACKAGES = ("models", "data")
TOP_LEVEL_MODULES = ("experiment", "cache", "sweep", "cli")


def workspace_rows() -> dict[str, dict[str, str]]:
  """WORKSPACE.md's paper table, keyed by arXiv id."""
  rows = {}
  lines = (REPO / "WORKSPACE.md").read_text().splitlines()
  header = None
  for line in lines:
    if not line.startswith("|"):  # any other line ends a table
      header = None
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells[:2] == ["paper", "arXiv"]:
      header = cells
      continue
    if header and not set(cells[0]) <= {"-"} and len(cells) == len(header):
      rows[cells[1]] = dict(zip(header, cells, strict=True))
  return rows


def _module_links(cell: str) -> str:
  """`toolkit/ot/light_sb.py` -> a cross-reference to the module's API entry."""
  links = []
  for path in re.findall(r"`(toolkit/[\w/]+)\.py`", cell):
    links.append(f"{{py:mod}}`{path.replace('/', '.')}`")
  return ", ".join(links)


def write_field_pages(registry) -> list[str]:
  rows = workspace_rows()
  covered = [key for field in FIELDS for key in field.papers]
  keys = [entry.key for entry in registry.PAPERS]
  if sorted(covered) != sorted(keys):
    raise ValueError(f"docs FIELDS and experiments/registry.py disagree: {sorted(set(covered) ^ set(keys))}")
  names = []
  for field in FIELDS:
    out = [f"# {field.title}", "", field.intro, ""]
    for key in field.papers:
      entry = registry.by_key(key)
      row = rows.get(entry.arxiv)
      out += [f"## {entry.title}", "", f"[arXiv {entry.arxiv}](https://arxiv.org/abs/{entry.arxiv})", ""]
      if entry.experiment is None or row is None:
        out += ["Not implemented yet.", ""]
        continue
      notebook = f"../tutorials/{entry.experiment}"
      out += [
        f"- **Library:** {_module_links(row['module'])}",
        f"- **Binary:** `toolkit {entry.experiment} --quick` (in a clone: `python -m experiments.{entry.experiment}`)",
        f"- **Tutorial:** [the notebook]({notebook}.ipynb)",
        f"- **Status:** {row['status']}",
        "",
        f"**Reproduced here (quick scale):** {row['reproduced figure (quick scale)']}",
        "",
      ]
    path = GENERATED / "fields" / f"{field.slug}.md"
    path.write_text("\n".join(out))
    names.append(field.slug)
  return names


def _title(text: str, char: str) -> list[str]:
  return [text, char * len(text), ""]


def write_api_pages() -> int:
  """One page per subpackage, every public module on it; returns the number of modules documented."""
  import toolkit

  count = 0
  packages = sorted(m.name for m in pkgutil.iter_modules(toolkit.__path__) if m.ispkg and m.name != "experiments")
  index = _title("API reference", "=") + [".. toctree::", "   :maxdepth: 1", "", "   toolkit"]
  lines = _title("toolkit", "=") + [".. automodule:: toolkit", "   :no-members:", ""]
  for name in TOP_LEVEL_MODULES:
    lines += _title(f"toolkit.{name}", "-") + [f".. automodule:: toolkit.{name}", "   :members:", ""]
    count += 1
  (GENERATED / "api" / "toolkit.rst").write_text("\n".join(lines))
  for package in packages:
    module = importlib.import_module(f"toolkit.{package}")
    lines = _title(f"toolkit.{package}", "=") + [f".. automodule:: toolkit.{package}", "   :no-members:", ""]
    for sub in sorted(m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")):
      lines += _title(f"toolkit.{package}.{sub}", "-")
      lines += [f".. automodule:: toolkit.{package}.{sub}", "   :members:", ""]
      count += 1
    (GENERATED / "api" / f"{package}.rst").write_text("\n".join(lines))
    index.append(f"   {package}")
  (GENERATED / "api" / "index.rst").write_text("\n".join(index) + "\n")
  return count


def copy_tutorials(registry) -> list[str]:
  binaries = {entry.experiment for entry in registry.PAPERS if entry.experiment}
  names = []
  for path in sorted((REPO / "notebooks").glob("*.ipynb")):
    shutil.copyfile(path, GENERATED / "tutorials" / path.name)
    names.append(path.stem)
  lines = [
    "# Tutorials",
    "",
    (
      "One notebook per paper, rendered with the outputs stored by `make notebooks` (the tutorial size). Each runs "
      "on Colab as it is: its first cell installs the toolkit."
    ),
    "",
    "```{toctree}",
    ":maxdepth: 1",
    "",
    *names,
    "```",
    "",
  ]
  missing = sorted(set(names) - binaries)
  if missing:
    raise ValueError(f"notebooks without a paper in experiments/registry.py: {missing}")
  (GENERATED / "tutorials" / "index.md").write_text("\n".join(lines))
  return names


def write_report_page() -> None:
  report = REPO / "reports" / "REPORT.md"
  if report.exists():
    text = report.read_text()
    text = text if text.startswith("# ") else "# Reproduce report\n\n" + text
  else:
    text = (
      "# Reproduce report\n\n`make reproduce` (or `toolkit reproduce` from an installed package) runs every "
      "paper's quick-scale claim and writes `reports/REPORT.md`: claim, the paper's figure, measured value, "
      "verdict and figure per paper. This build found no report; build the docs after `make reproduce` to "
      "include it here. `WORKSPACE.md` and the field pages carry the figures measured when each paper landed.\n"
    )
  (GENERATED / "report.md").write_text(text)


def generate() -> dict[str, int]:
  """Writes every generated page; returns counts for the build's log (conf.py puts the clone on sys.path)."""
  registry = importlib.import_module("experiments.registry")
  shutil.rmtree(GENERATED, ignore_errors=True)
  for sub in ("fields", "api", "tutorials"):
    (GENERATED / sub).mkdir(parents=True)
  fields = write_field_pages(registry)
  (GENERATED / "fields" / "index.md").write_text(
    "# Papers by field\n\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(fields + ["shared"]) + "\n```\n"
  )
  shutil.copyfile(DOCS / "shared.md", GENERATED / "fields" / "shared.md")
  modules = write_api_pages()
  tutorials = copy_tutorials(registry)
  write_report_page()
  return {"fields": len(fields), "modules": modules, "tutorials": len(tutorials)}
