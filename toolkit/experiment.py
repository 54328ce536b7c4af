"""The experiment harness shared by every binary under ``experiments/``.

An experiment is an :class:`Experiment`: the paper's :class:`Claim`s, a ``get_config(scale)`` returning an
``ml_collections.ConfigDict`` for ``"quick"`` and ``"full"``, and ``run(config, ctx) -> measured`` which trains,
draws its figures through ``ctx`` and returns a dict of measured values. :func:`main` turns it into an absl binary:

  python -m experiments.grokking --quick --seed=0 --out_dir=runs/grokking --config.lr=0.005

It writes ``metrics.json`` (config, measured values, claims and verdicts), ``summary.md`` and the PNG figures to
``--out_dir``, logs progress, and checkpoints long loops (:func:`resumable_loop`) under ``out_dir/checkpoints`` so
that a binary killed mid-run and started again with the same flags continues where it stopped and ends with the
same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as std_logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
  ">=": lambda m, t: m >= t,
  ">": lambda m, t: m > t,
  "<=": lambda m, t: m <= t,
  "<": lambda m, t: m < t,
  "==": lambda m, t: m == t,
}


@dataclasses.dataclass(frozen=True)
class Paper:
  """A paper of the toolkit's map (``WORKSPACE.md``)."""

  key: str
  title: str
  arxiv: str


@dataclasses.dataclass(frozen=True)
class Claim:
  """One headline claim and how our quick-scale measurement is judged against it.

  Attributes:
    metric: key of the value that ``run`` returns.
    statement: the paper's statement, in our words.
    paper_value: the paper's own figure and where it comes from (table, figure, section).
    comparison: one of ``>=, >, <=, <, ==``; the claim holds when ``measured <comparison> target``.
    target: our quick-scale target.
    full_target: the target of the full configuration where it differs (``None``: same as ``target``).
    scales: the scales at which the claim is judged (a claim that needs the paper's budget is ``("full",)``).
  """

  metric: str
  statement: str
  paper_value: str
  comparison: str
  target: float
  full_target: float | None = None
  scales: tuple[str, ...] = ("quick", "full")

  def __post_init__(self):
    if self.comparison not in _COMPARISONS:
      raise ValueError(f"Claim.comparison must be one of {sorted(_COMPARISONS)}, got {self.comparison!r}.")
    if not self.scales or not set(self.scales) <= {"quick", "full"}:
      raise ValueError(f"Claim.scales must be a non-empty subset of ('quick', 'full'), got {self.scales!r}.")

  def target_for(self, scale: str) -> float:
    return self.target if scale == "quick" or self.full_target is None else self.full_target

  def check(self, measured: float | None, scale: str = "quick") -> bool:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
      return False
    return bool(_COMPARISONS[self.comparison](measured, self.target_for(scale)))

  def describe_target(self, scale: str = "quick") -> str:
    return f"{self.metric} {self.comparison} {self.target_for(scale):g}"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a binary declares; :func:`main` and ``experiments/reproduce.py`` do the rest."""

  name: str
  paper: Paper
  claims: Sequence[Claim]
  get_config: Callable[[str], ConfigDict]
  run: Callable[[ConfigDict, Context], Mapping[str, float]]
  validate_config: Callable[[ConfigDict], None] = lambda config: None


class ConfigError(ValueError):
  """A configuration value that cannot be used; the binary exits with its message on one line."""


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's own INFO lines (several per save), which would bury the experiment's progress."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


class Checkpointer:
  """Saves and restores pytrees with orbax, one sub-directory per named loop, plus a JSON history.

  Checkpoints are tied to the configuration they were made with: a directory holding checkpoints of another
  configuration is refused (``ConfigError``) rather than silently mixed.
  """

  def __init__(self, directory: str, fingerprint: str, max_to_keep: int = 2):
    import orbax.checkpoint as ocp  # orbax is slow to import; only binaries that checkpoint pay for it.

    self._ocp = ocp
    absl_logger = std_logging.getLogger("absl")
    if not any(isinstance(f, _QuietOrbax) for f in absl_logger.filters):
      absl_logger.addFilter(_QuietOrbax())
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._managers: dict[str, Any] = {}
    self.saves = 0
    os.makedirs(self.directory, exist_ok=True)
    stamp = os.path.join(self.directory, "fingerprint.txt")
    if os.path.exists(stamp):
      with open(stamp) as f:
        found = f.read().strip()
      if found != fingerprint:
        raise ConfigError(
          f"{self.directory} holds checkpoints of another configuration; pass --restart to discard them or "
          "choose another --out_dir."
        )
    else:
      with open(stamp, "w") as f:
        f.write(fingerprint)

  def _manager(self, name: str):
    if name not in self._managers:
      # Synchronous saves: a chunk's checkpoint is on disk before the next chunk starts, and no saver threads.
      options = self._ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, enable_async_checkpointing=False)
      self._managers[name] = self._ocp.CheckpointManager(os.path.join(self.directory, name), options=options)
    return self._managers[name]

  def save(self, name: str, step: int, state: Any, history: list[dict]) -> None:
    manager = self._manager(name)
    args = self._ocp.args.Composite(
      state=self._ocp.args.StandardSave(state),
      history=self._ocp.args.JsonSave({"history": history}),
    )
    manager.save(step, args=args, force=True)
    manager.wait_until_finished()
    self.saves += 1
    logging.info("[%s] checkpoint %d saved at step %d", name, self.saves, step)

  def restore(self, name: str, template: Any) -> tuple[int, Any, list[dict]] | None:
    """Returns ``(step, state, history)`` of the latest checkpoint of ``name``, or ``None``."""
    manager = self._manager(name)
    step = manager.latest_step()
    if step is None:
      return None
    args = self._ocp.args.Composite(
      state=self._ocp.args.StandardRestore(template), history=self._ocp.args.JsonRestore()
    )
    restored = manager.restore(step, args=args)
    # Rebuild the template's own containers (optax NamedTuples, flax dicts) around the restored leaves.
    state = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(restored.state))
    return step, state, list(restored.history["history"])


@dataclasses.dataclass
class Context:
  """What ``run`` gets besides its config: where to write, the seed, checkpoints and the scale."""

  out_dir: str
  seed: int
  scale: str
  checkpointer: Checkpointer | None
  figures: list[str] = dataclasses.field(default_factory=list)

  def key(self) -> jax.Array:
    return jax.random.key(self.seed)

  def save_figure(self, fig, name: str) -> str:
    """Saves a matplotlib figure as ``out_dir/name.png`` and closes it."""
    import matplotlib.pyplot as plt

    path = os.path.join(self.out_dir, f"{name}.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    self.figures.append(os.path.basename(path))
    return path

  def write_text(self, name: str, text: str, *, echo: bool = False) -> str:
    """Writes ``text`` (a table, a summary) to ``out_dir/name``, newline-terminated; ``echo`` also prints it."""
    text = text if text.endswith("\n") else text + "\n"
    path = os.path.join(self.out_dir, name)
    with open(path, "w") as f:
      f.write(text)
    if echo:
      print(text, end="", flush=True)
    return path


def resumable_loop(
  ctx: Context,
  name: str,
  init_state: Any,
  num_steps: int,
  chunk: int,
  advance: Callable[[Any, int], Any],
  record: Callable[[Any, int], dict],
  checkpoint_every: int | None = None,
  unit: str = "step",
  log_every_seconds: float = 2.0,
) -> tuple[Any, list[dict]]:
  """Runs ``state = advance(state, chunk)`` up to ``num_steps``, recording and checkpointing as it goes.

  ``advance(state, n)`` does ``n`` steps (``n`` is ``chunk`` or the remainder, so a jitted ``advance`` compiles
  at most twice); ``record(state, step)`` returns a dict of metrics after ``step`` steps, logged and appended to
  the history. With a checkpointer in ``ctx``, the state and the history are saved every ``checkpoint_every``
  steps and at the end, and a restarted run resumes from the latest one. The chunks are the same whether or not
  the run was interrupted, so a resumed run ends with the same result, bit for bit, as an uninterrupted one.
  Progress is logged at most every ``log_every_seconds`` (and at the end); every record goes to the history.

  Returns:
    The final state and the history (one dict per record, each with a ``step`` entry).
  """
  if chunk <= 0 or num_steps < 0:
    raise ValueError(f"resumable_loop: need chunk > 0 and num_steps >= 0, got {chunk} and {num_steps}.")
  checkpoint_every = checkpoint_every or chunk
  step, state, history = 0, init_state, []
  if ctx.checkpointer is not None:
    restored = ctx.checkpointer.restore(name, init_state)
    if restored is not None:
      step, state, history = restored
      logging.info("[%s] resumed from the checkpoint at %s %d", name, unit, step)
  if step == 0 and not history:
    history.append({"step": 0, **record(state, 0)})
  start = last_logged = time.time()
  last_saved = step
  while step < num_steps:
    n = min(chunk, num_steps - step)
    state = advance(state, n)
    step += n
    history.append({"step": step, **record(state, step)})
    if time.time() - last_logged >= log_every_seconds or step == num_steps:
      last_logged = time.time()
      metrics = " ".join(
        f"{k}={_fmt(v)}" for k, v in history[-1].items() if k != "step" and isinstance(v, (int, float, str))
      )
      logging.info("[%s] %s %d/%d %s (%.1f s)", name, unit, step, num_steps, metrics, last_logged - start)
    if ctx.checkpointer is not None and (step - last_saved >= checkpoint_every or step == num_steps):
      ctx.checkpointer.save(name, step, state, history)
      last_saved = step
  return state, history


def run_cases(
  ctx: Context,
  cases: Sequence[Any],
  run_case: Callable[[int, Any], dict],
  describe: Callable[[dict], str] | None = None,
  name: str = "cases",
) -> list[dict]:
  """Runs ``run_case(i, case)`` for each case with a checkpoint after each one; returns their result dicts.

  For experiments made of independent cases (problem sizes, dimensions, ...): a restarted run skips the cases
  already finished. Results must be JSON-serialisable; ``describe(result)`` gives the progress line.
  """
  results: dict[int, dict] = {}

  def advance(state, n):
    done = int(state["cases_done"])
    for i in range(done, done + n):
      results[i] = run_case(i, cases[i])
    return {"cases_done": jnp.asarray(done + n)}

  def record(state, step):
    del state
    if step == 0:
      return {}
    result = results[step - 1]
    return {"result": result, **({"summary": describe(result)} if describe else {})}

  # orbax saves no bare scalars: the state is a dict.
  _, history = resumable_loop(ctx, name, {"cases_done": jnp.asarray(0)}, len(cases), 1, advance, record, unit="case")
  return [h["result"] for h in history if "result" in h]


def _fmt(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


_SCALES = ("quick", "full")


def _check_experiment(experiment: Any) -> None:
  if not isinstance(experiment, Experiment):
    raise TypeError(f"`experiment` must be a toolkit.experiment.Experiment, got {type(experiment).__name__}.")


def _check_config(config: Any) -> None:
  if not isinstance(config, ConfigDict):
    raise TypeError(f"`config` must be an ml_collections ConfigDict, got {type(config).__name__}.")


def _check_scale(scale: Any) -> None:
  # Another word would judge no claim at all (each claim lists the scales it is judged at) and pass silently.
  if scale not in _SCALES:
    raise ValueError(f"`scale` must be one of {_SCALES}, got {scale!r}.")


def config_fingerprint(config: ConfigDict, seed: int, scale: str) -> str:
  """A short hash of what determines a run's result: a checkpoint resumes only into the run that made it."""
  _check_config(config)
  if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
    raise TypeError(f"`seed` must be an int, got {seed!r}.")
  _check_scale(scale)
  # int(): json would write np.int64(0) as the string "0", another fingerprint than the int 0's.
  payload = json.dumps({"config": config.to_dict(), "seed": int(seed), "scale": scale}, sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _to_jsonable(value):
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    value = np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
  if isinstance(value, Mapping):
    return {str(k): _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_jsonable(v) for v in value]
  return value


def evaluate_claims(experiment: Experiment, measured: Mapping[str, float], scale: str) -> list[dict]:
  """One record per claim judged at ``scale``: the claim, its target, the measured value and the verdict."""
  _check_experiment(experiment)
  if not isinstance(measured, Mapping):
    raise TypeError(f"`measured` must be a mapping of metric names to numbers, got {type(measured).__name__}.")
  _check_scale(scale)
  rows = []
  for claim in (c for c in experiment.claims if scale in c.scales):
    value = measured.get(claim.metric)
    try:
      value = None if value is None else float(value)
    except (TypeError, ValueError):
      raise TypeError(f"`measured[{claim.metric!r}]` must be a number, got {value!r}.") from None
    rows.append(
      {
        "paper": experiment.paper.title,
        "arxiv": experiment.paper.arxiv,
        "experiment": experiment.name,
        "metric": claim.metric,
        "statement": claim.statement,
        "paper_value": claim.paper_value,
        "comparison": claim.comparison,
        "target": claim.target_for(scale),
        "measured": value,
        "passed": claim.check(value, scale),
      }
    )
  return rows


def write_results(
  experiment: Experiment,
  ctx: Context,
  config: ConfigDict,
  measured: Mapping[str, float],
  seconds: float,
) -> dict:
  """Writes ``metrics.json`` and ``summary.md`` to ``ctx.out_dir`` and returns the metrics record."""
  if not isinstance(ctx, Context):
    raise TypeError(f"`ctx` must be a toolkit.experiment.Context, got {type(ctx).__name__}.")
  _check_config(config)
  if isinstance(seconds, bool) or not isinstance(seconds, int | float | np.integer | np.floating) or not seconds >= 0:
    raise ValueError(f"`seconds` must be a number >= 0 (the run's wall time), got {seconds!r}.")
  claims = evaluate_claims(experiment, measured, ctx.scale)  # checks `experiment`, `measured` and the scale
  record = {
    "experiment": experiment.name,
    "paper": experiment.paper.title,
    "arxiv": experiment.paper.arxiv,
    "scale": ctx.scale,
    "seed": ctx.seed,
    "seconds": seconds,
    "config": config.to_dict(),
    "measured": dict(measured),
    "claims": claims,
    "figures": list(ctx.figures),
    "passed": all(c["passed"] for c in claims),
  }
  ctx.write_text("metrics.json", json.dumps(_to_jsonable(record), indent=2))
  lines = [
    f"# {experiment.paper.title} (arXiv {experiment.paper.arxiv})",
    "",
    f"Experiment `{experiment.name}`, {ctx.scale} scale, seed {ctx.seed}, {seconds:.0f} s.",
    "",
    "| claim | paper | target | measured | verdict |",
    "|---|---|---|---|---|",
  ]
  for c in claims:
    measured_text = "—" if c["measured"] is None else f"{c['measured']:.4g}"
    verdict = "passed" if c["passed"] else "FAILED"
    lines.append(
      f"| {c['statement']} | {c['paper_value']} | {c['metric']} {c['comparison']} {c['target']:g} | "
      f"{measured_text} | {verdict} |"
    )
  other = {k: v for k, v in measured.items() if k not in {c["metric"] for c in claims}}
  if other:
    lines += ["", "Other measurements:", ""] + [f"- `{k}`: {_fmt(float(v))}" for k, v in sorted(other.items())]
  lines += ["", "Figures:", ""] + [f"![{name}]({name})" for name in ctx.figures]
  ctx.write_text("summary.md", "\n".join(lines))
  return record


# ----------------------------------------------------------------------------------------------------------------
# The absl binary.

FLAGS = flags.FLAGS


def append_xla_flags(*flags: str) -> None:
  """Appends ``flags`` to ``$XLA_FLAGS``; call it in a binary's ``__main__`` block, before the first computation
  initialises XLA (a flag set later is ignored)."""
  for flag in flags:
    # XLA splits $XLA_FLAGS at spaces (a flag with a space becomes two) and aborts the process at start-up on a
    # word without `--` (read as a flag file), far from the call that set it.
    if not isinstance(flag, str) or not flag.startswith("--") or any(c.isspace() for c in flag):
      raise ValueError(f"`flags` must be strings like '--xla_name=value' without spaces, got {flag!r}.")
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def define_flags(experiment: Experiment) -> None:
  """Defines ``--quick``, ``--seed``, ``--out_dir``, ``--restart`` and ``--config`` (the full config)."""
  _check_experiment(experiment)  # before any flag is defined: absl refuses to define a flag twice
  flags.DEFINE_bool("quick", False, "Run the quick-scale config (the one `reproduce` runs) instead of the full one.")
  flags.DEFINE_integer("seed", 0, "Seed of every random draw of the run.")
  flags.DEFINE_string(
    "out_dir",
    os.path.join("runs", experiment.name),
    "Where to write metrics, figures, checkpoints.",
  )
  flags.DEFINE_bool("restart", False, "Discard this out_dir's checkpoints instead of resuming from them.")
  config = experiment.get_config("full")
  try:
    # config_flags reads the --config.* overrides from sys.argv here, at definition.
    config_flags.DEFINE_config_dict(
      "config", config, "The experiment's config; override fields with --config.<field>=."
    )
  except (AttributeError, KeyError) as e:
    _fail(f"a --config.<field> override names no field of the config ({e}); its fields: {sorted(config.keys())}")
  # absl's --help lists the key flags of the main module only (the config's fields appear in --config's default);
  # these are defined here, so they are declared key flags of the binary.
  for name in ("quick", "seed", "out_dir", "restart", "config"):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def _check_out_dir(out_dir: str) -> None:
  """Fails with one line when ``out_dir`` cannot be created or written (a file, read-only, /sys, ...)."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as e:
    _fail(f"--out_dir={out_dir} cannot be written: {e.strerror or e}.")


def _resolve_config(experiment: Experiment) -> tuple[ConfigDict, str]:
  scale = "quick" if FLAGS.quick else "full"
  if scale == "full":
    return FLAGS.config, scale
  config = experiment.get_config("quick")
  # --config.x=v overrides were applied to the full config at parse time; apply them again to the quick one.
  for path, value in config_flags.get_override_values(FLAGS["config"]).items():
    node = config
    *parents, leaf = path.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config, scale


def _fail(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def run_experiment(
  experiment: Experiment,
  config: ConfigDict,
  out_dir: str,
  seed: int = 0,
  scale: str = "quick",
  restart: bool = False,
  checkpoint: bool = True,
) -> dict:
  """Runs ``experiment`` with ``config`` and writes its results to ``out_dir``; returns the metrics record.

  The library entry point behind the binary, also used by tests and notebooks.
  """
  experiment.validate_config(config)
  os.makedirs(out_dir, exist_ok=True)
  ckpt_dir = os.path.join(out_dir, "checkpoints")
  if restart and os.path.isdir(ckpt_dir):
    shutil.rmtree(ckpt_dir)
  checkpointer = Checkpointer(ckpt_dir, config_fingerprint(config, seed, scale)) if checkpoint else None
  ctx = Context(out_dir=out_dir, seed=seed, scale=scale, checkpointer=checkpointer)
  start = time.time()
  measured = experiment.run(config, ctx)
  return write_results(experiment, ctx, config, measured, time.time() - start)


def main(experiment: Experiment) -> None:
  """``app.run`` entry point of an experiment binary (call :func:`define_flags` at import first)."""
  _check_experiment(experiment)

  def _main(argv):
    if len(argv) > 1:
      _fail(f"unexpected positional arguments {argv[1:]}; flags look like --name=value.")
    config, scale = _resolve_config(experiment)
    _check_out_dir(FLAGS.out_dir)
    logging.info("%s: %s scale, seed %d, devices %s", experiment.name, scale, FLAGS.seed, jax.devices())
    try:
      record = run_experiment(experiment, config, FLAGS.out_dir, FLAGS.seed, scale, restart=FLAGS.restart)
    except ConfigError as e:
      _fail(str(e))
    for c in record["claims"]:
      logging.info(
        "claim %s %s %g: measured %s -> %s",
        c["metric"],
        c["comparison"],
        c["target"],
        c["measured"],
        "passed" if c["passed"] else "FAILED",
      )
    logging.info("wrote %s", os.path.join(FLAGS.out_dir, "summary.md"))

  app.run(_main)
