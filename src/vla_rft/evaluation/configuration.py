"""Configuration of the evaluate stage, and the perturbation suites as data.

A *suite* is a named perturbation applied to every episode of every task it applies to:
``nominal``, then ``<kind>-<magnitude>cm`` for kind in object, goal, robot, combined and each
magnitude in ``magnitudes_cm`` (default 2.5 and 5 cm: ``object-2.5cm`` ... ``combined-5cm``).

Profile values (``evaluate:`` in params.yaml) and what they cost on 2 CPU cores:

- quick: ``episodes_per_task: 2, suites: [nominal, combined-5cm]`` -- 24 episodes per policy for
  6 tasks; measured 16 s for a zero-action policy (worker start and env creation included) and
  12 s for the scripted expert, on a 2-core machine shared with other jobs.
- standard (MT10): ``nominal_episodes_per_task: 50, episodes_per_task: 10, suites: [all]`` --
  500 nominal + 660 perturbed episodes per policy (see params.yaml for the measured cost).
- six-task standard before MT10: ``episodes_per_task: 20, suites: [all]`` -- 880 applicable episodes per policy (goal
  suites skip 4 tasks, object suites skip reach): a full-length (150-step) policy costs ~230
  CPU-seconds (~2 min on 2 cores) plus its own forward passes; the expert ~440 CPU-seconds,
  because ``record_episodes`` renders every step.

Suite names follow :attr:`vla_rft.sim.perturbations.Perturbation.name`, the one naming rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vla_rft.errors import ConfigError
from vla_rft.sim.perturbations import PERTURBATION_KINDS, suite_name

#: a policy's report name: it names files and directories of the report, so no path parts
POLICY_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def check_policy_name(name: str) -> str:
    """Refuse a policy name that is not a short identifier (or is the scripted expert's name)."""
    if not isinstance(name, str) or not POLICY_NAME_RE.fullmatch(name):
        raise ConfigError(f"policy name {name!r} is not allowed: use 1-32 letters, digits, '_' or '-', "
                          "starting with a letter (e.g. base, rft)")
    if name == "expert":
        raise ConfigError("policy name 'expert' is the scripted expert's; call the policy something else")
    return name


#: perturbation kinds that make suites, in report order (``none`` is the nominal suite)
SUITE_KINDS: tuple[str, ...] = tuple(k for k in PERTURBATION_KINDS if k != "none")
#: the special suite name that selects every suite
ALL_SUITES = "all"


@dataclass(frozen=True)
class Suite:
    """A perturbation suite: the same episodes as nominal, with one part of the scene shifted."""

    name: str  #: e.g. "nominal", "object-2.5cm"
    kind: str  #: perturbation kind: none, object, goal, robot or combined
    magnitude_cm: float  #: shift in the table plane, centimetres (0 for nominal)

    @property
    def perturbed(self) -> bool:
        return self.kind != "none"


def suite_table(magnitudes_cm: list[float] | tuple[float, ...] = (2.5, 5.0)) -> dict[str, Suite]:
    """Every suite for these magnitudes, by name, in report order (nominal first)."""
    suites = {"nominal": Suite("nominal", "none", 0.0)}
    for kind in SUITE_KINDS:
        for m in magnitudes_cm:
            name = suite_name(kind, float(m))
            suites[name] = Suite(name, kind, float(m))
    return suites


@dataclass
class EvaluateConfig:
    """The ``evaluate`` stage: policies act in the real simulator on nominal and perturbed suites."""

    #: episodes per (suite, task); episode i of every suite and task uses seed ``seed_base + i``
    episodes_per_task: int = 20
    #: episodes per task on the nominal suite (0: ``episodes_per_task``). The headline's gain is
    #: measured on the nominal suite, so its power is bought there: nominal 50 + perturbed 10 costs
    #: fewer episodes than 20 everywhere and narrows the nominal gain's interval (benchmarks/power.py)
    nominal_episodes_per_task: int = 0
    #: suite names to run, in any order (reported nominal first); ``[all]`` selects every suite
    suites: list[str] = field(default_factory=lambda: [ALL_SUITES])
    #: perturbation magnitudes (cm) that define the suites ``<kind>-<m>cm``
    magnitudes_cm: list[float] = field(default_factory=lambda: [2.5, 5.0])
    #: first evaluation seed; training data uses seeds ``prepare_data.seed_offset + 0..N``, far below
    seed_base: int = 1_000_000
    #: env steps before an episode counts as a failure (an episode also ends at first success)
    max_episode_steps: int = 150
    #: envs stepped together per batch (split over the simulator workers). Each worker keeps
    #: ~batch_size / num_workers Meta-World envs alive, ~160 MiB each (the GL context dominates):
    #: 12 -> ~1.2 GiB per worker. Bigger batches only buy bigger policy forward passes.
    batch_size: int = 12
    #: simulator worker processes (0: run in the calling process)
    num_workers: int = 2
    #: GIFs kept per task, policy and GIF suite: up to this many successes and as many failures
    gifs_per_task: int = 1
    #: suites whose episodes may be kept as GIFs
    gif_suites: list[str] = field(default_factory=lambda: ["nominal"])
    #: draw PNG plots (matplotlib) into the report
    plots: bool = True
    #: confidence level of the Wilson score intervals
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ConfigError(f"evaluate.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if self.nominal_episodes_per_task < 0:
            raise ConfigError("evaluate.nominal_episodes_per_task must be >= 0 (0: episodes_per_task), "
                              f"got {self.nominal_episodes_per_task}")
        if not self.magnitudes_cm:
            raise ConfigError("evaluate.magnitudes_cm is empty: name at least one shift, e.g. [2.5, 5.0]")
        for m in self.magnitudes_cm:
            if not 0 < m <= 10:
                raise ConfigError(f"evaluate.magnitudes_cm: {m} is out of range (0, 10] cm")
        if len({suite_name("object", float(m)) for m in self.magnitudes_cm}) != len(self.magnitudes_cm):
            raise ConfigError(f"evaluate.magnitudes_cm lists a magnitude twice: {self.magnitudes_cm}")
        if not self.suites:
            raise ConfigError(f"evaluate.suites is empty: name suites or use [{ALL_SUITES}]")
        allowed = suite_table(self.magnitudes_cm)
        for name in [*self.suites, *self.gif_suites]:
            if name != ALL_SUITES and name not in allowed:
                raise ConfigError(f"evaluate: unknown suite {name!r}; allowed: {ALL_SUITES}, {', '.join(allowed)}")
        if len(set(self.suites)) != len(self.suites):
            raise ConfigError(f"evaluate.suites lists a suite twice: {self.suites}")
        if self.seed_base < 0:
            raise ConfigError(f"evaluate.seed_base must be >= 0, got {self.seed_base}")
        if not 1 <= self.max_episode_steps <= 500:
            raise ConfigError(f"evaluate.max_episode_steps must be in [1, 500], got {self.max_episode_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"evaluate.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"evaluate.num_workers must be >= 0, got {self.num_workers}")
        if self.gifs_per_task < 0:
            raise ConfigError(f"evaluate.gifs_per_task must be >= 0, got {self.gifs_per_task}")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"evaluate.confidence must be in [0.5, 1), got {self.confidence}")

    @property
    def nominal_episodes(self) -> int:
        """Episodes per task on the nominal suite."""
        return self.nominal_episodes_per_task or self.episodes_per_task

    def episodes_for(self, suite: Suite) -> int:
        """Episodes per task on ``suite``: seeds ``seed_base + 0 .. n-1`` (shared across suites)."""
        return self.nominal_episodes if suite.kind == "none" else self.episodes_per_task

    def suite_list(self) -> list[Suite]:
        """The selected suites, in report order (nominal first, then by kind and magnitude)."""
        table = suite_table(self.magnitudes_cm)
        if ALL_SUITES in self.suites:
            return list(table.values())
        return [s for name, s in table.items() if name in self.suites]

    def gif_suite_names(self) -> set[str]:
        table = suite_table(self.magnitudes_cm)
        return set(table) if ALL_SUITES in self.gif_suites else set(self.gif_suites)
