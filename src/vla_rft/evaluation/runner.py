"""Policies and the scripted expert act in the real simulator on the same, seeded episodes.

Episode i of (suite, task) is ``EpisodeSpec(task, seed_base + i, perturbation(suite))``: the
same i gives the same nominal layout in every suite (only the perturbation differs), and every
policy faces exactly the same episodes. Where a suite does not apply to a task (a goal shift on a
task whose goal is fixed to its object; an object shift on reach) no episode is run and the cell
is reported "n/a".

Execution is chunked: the policy is queried once per K actions with the frame rendered at the
chunk boundary (``render='last'``), batched over ``batch_size`` envs that
:class:`~vla_rft.sim.vector.BatchedSimulator` spreads over its worker processes. An episode ends
at its first success or after ``max_episode_steps``.

The policy is any callable ``act(frames, states, task_index) -> actions``:
frames ``(B, H, W, 3) uint8``, states ``(B, 4) float32``, task_index ``(B,) int64`` into the
evaluated task list, actions ``(B, K, 4) float32``. Evaluation knows nothing else about it; a
stochastic policy should act with its mean for a reproducible evaluation.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from vla_rft.evaluation.configuration import EvaluateConfig, Suite
from vla_rft.sim.perturbations import EpisodeSpec, Perturbation, applies
from vla_rft.tasks import ACTION_DIM, FPS, TASKS

PolicyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: the name under which the scripted expert's results are reported
EXPERT = "expert"
_EXPERT_BATCH = 64


@dataclass
class EpisodeResult:
    """The outcome of one episode."""

    suite: str
    task: str
    episode: int  #: i: the episode's index within its (suite, task) cell
    seed: int  #: seed_base + i
    success: bool
    steps: int  #: env steps executed (to first success, or max_episode_steps)
    #: env steps until success first held (exact, also inside a chunk), None on failure
    steps_to_success: int | None
    initial_state: list[float]  #: proprioception at reset (hand xyz, gripper)


@dataclass
class EpisodeVideo:
    """Frames of one episode kept for the report, one frame per chunk boundary (FPS / K per second)."""

    suite: str
    task: str
    episode: int
    success: bool
    frames: np.ndarray  #: (T, H, W, 3) uint8, frames[0] is the reset frame
    fps: float  #: playback rate that shows the episode in real time


@dataclass
class EvalResults:
    """Everything one evaluation of one policy produced."""

    policy: str
    tasks: list[str]
    suites: list[Suite]
    episodes: list[EpisodeResult]
    #: (suite, task) cells the suite does not apply to: no episode was run there
    not_applicable: list[tuple[str, str]]
    videos: list[EpisodeVideo] = field(default_factory=list)
    episodes_per_task: int = 0
    max_episode_steps: int = 0
    seed_base: int = 0
    chunk_len: int | None = None  #: K the policy produced (None for the expert, which acts per step)
    seconds: float = 0.0
    #: episodes per task on the nominal suite (``episodes_per_task`` on every other suite)
    nominal_episodes_per_task: int = 0

    def __post_init__(self) -> None:
        if not self.nominal_episodes_per_task:
            self.nominal_episodes_per_task = self.episodes_per_task

    def design(self) -> tuple:
        """What makes two evaluations comparable episode by episode."""
        return (list(self.tasks), self.episodes_per_task, self.nominal_episodes_per_task, self.max_episode_steps,
                self.seed_base)

    def cell(self, suite: str, task: str) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.suite == suite and e.task == task]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without frames."""
        return {
            "policy": self.policy, "tasks": list(self.tasks), "suites": [asdict(s) for s in self.suites],
            "episodes": [asdict(e) for e in self.episodes],
            "not_applicable": [list(c) for c in self.not_applicable],
            "episodes_per_task": self.episodes_per_task, "max_episode_steps": self.max_episode_steps,
            "seed_base": self.seed_base, "chunk_len": self.chunk_len, "seconds": self.seconds,
            "nominal_episodes_per_task": self.nominal_episodes_per_task,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResults":
        return cls(
            policy=d["policy"], tasks=list(d["tasks"]), suites=[Suite(**s) for s in d["suites"]],
            episodes=[EpisodeResult(**e) for e in d["episodes"]],
            not_applicable=[tuple(c) for c in d["not_applicable"]],  # type: ignore[misc]
            episodes_per_task=d["episodes_per_task"], max_episode_steps=d["max_episode_steps"],
            seed_base=d.get("seed_base", 0), chunk_len=d.get("chunk_len"), seconds=d.get("seconds", 0.0),
            nominal_episodes_per_task=d.get("nominal_episodes_per_task", 0),
        )


@dataclass(frozen=True)
class PlannedEpisode:
    suite: Suite
    episode: int
    spec: EpisodeSpec


def plan_episodes(tasks: Sequence[str], suites: Sequence[Suite], cfg: EvaluateConfig
                  ) -> tuple[list[PlannedEpisode], list[tuple[str, str]]]:
    """The episodes to run, and the (suite, task) cells that are n/a.

    Ordered suite, then episode, then task, so every batch mixes tasks: each worker then needs
    only a few envs per task (envs are pooled per task and slot for the life of a worker).
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
    plan, skipped = [], []
    for suite in suites:
        pert = Perturbation(suite.kind, suite.magnitude_cm)
        live = [t for t in tasks if applies(t, pert)]
        skipped += [(suite.name, t) for t in tasks if t not in live]
        for i in range(cfg.episodes_for(suite)):
            plan += [PlannedEpisode(suite, i, EpisodeSpec(t, cfg.seed_base + i, pert)) for t in live]
    return plan, skipped


def _batches(plan: list[PlannedEpisode], size: int) -> Iterator[list[PlannedEpisode]]:
    """Batches of at most ``size`` planned episodes that never span two suites.

    A suite evaluated on its own (one branch of a fanned-out evaluation) then runs exactly the
    batches it runs inside the whole evaluation, so the merged result equals the single run.
    """
    for _, group in itertools.groupby(plan, key=lambda p: p.suite.name):
        group = list(group)
        for start in range(0, len(group), size):
            yield group[start:start + size]


@contextlib.contextmanager
def _episode_limit(sim, max_steps: int):
    """Run ``sim`` with this evaluation's step limit, restoring its own afterwards."""
    old = sim.max_episode_steps
    sim.max_episode_steps = max_steps
    try:
        yield
    finally:
        sim.max_episode_steps = old


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", leave=False, disable=not enabled or not sys.stderr.isatty())


class _VideoKeeper:
    """Keeps up to n successful and n failed episodes per (suite, task), first come first kept."""

    def __init__(self, per_task: int, suites: set[str]):
        self.per_task, self.suites = per_task, suites
        self.count: dict[tuple[str, str, bool], int] = {}
        self.videos: list[EpisodeVideo] = []

    def wants(self, suite: str) -> bool:
        return self.per_task > 0 and suite in self.suites

    def offer(self, suite: str, task: str, episode: int, success: bool, frames: Callable[[], np.ndarray],
              fps: float) -> None:
        key = (suite, task, success)
        if self.wants(suite) and self.count.get(key, 0) < self.per_task:
            self.count[key] = self.count.get(key, 0) + 1
            self.videos.append(EpisodeVideo(suite, task, episode, success, frames(), fps))


def _check_actions(actions: Any, batch: int) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[2] != ACTION_DIM or actions.shape[1] < 1:
        raise ValueError(
            f"the policy returned actions of shape {actions.shape}; expected (B={batch}, K, {ACTION_DIM})"
        )
    if not np.all(np.isfinite(actions)):
        raise ValueError("the policy returned NaN or inf actions")
    return actions


def _plan(tasks: Sequence[str], suites: Sequence[Suite] | None, cfg: EvaluateConfig):
    """The episodes to run (``suites=None``: ``cfg.suite_list()``), those skipped, and the GIF keeper."""
    tasks = list(tasks)
    suites = cfg.suite_list() if suites is None else list(suites)
    plan, skipped = plan_episodes(tasks, suites, cfg)
    return tasks, suites, plan, skipped, _VideoKeeper(cfg.gifs_per_task, cfg.gif_suite_names())


def evaluate_policy(act: PolicyFn, tasks: Sequence[str], suites: Sequence[Suite] | None, cfg: EvaluateConfig,
                    sim, *, name: str = "policy", progress: bool = True) -> EvalResults:
    """Run ``act`` in the real simulator on every applicable (suite, task, episode).

    ``sim`` is a :class:`~vla_rft.sim.vector.BatchedSimulator` (its image and camera settings
    define what the policy sees); ``suites=None`` takes ``cfg.suite_list()``.
    """
    start = time.time()
    tasks, suites, plan, skipped, keeper = _plan(tasks, suites, cfg)
    results: list[EpisodeResult] = []
    chunk_len: int | None = None
    with _episode_limit(sim, cfg.max_episode_steps), _progress(len(plan), f"evaluate {name}", progress) as bar:
        for batch in _batches(plan, cfg.batch_size):
            n = len(batch)
            obs = sim.reset([p.spec for p in batch])
            frames, states = obs.frames, obs.states.astype(np.float32)
            task_index = np.array([tasks.index(p.spec.task) for p in batch], dtype=np.int64)
            initial = states.copy()
            keep = [keeper.wants(p.suite.name) for p in batch]
            movie: list[list[np.ndarray]] = [[frames[b]] if keep[b] else [] for b in range(n)]
            steps = np.zeros(n, np.int64)
            to_success = np.full(n, -1, np.int64)
            done = np.zeros(n, bool)
            while not done.all():
                live = np.flatnonzero(~done)
                chunk = _check_actions(act(frames[live], states[live], task_index[live]), len(live))
                chunk_len = chunk.shape[1]
                actions = np.zeros((n, chunk_len, ACTION_DIM), np.float32)
                actions[live] = chunk
                out = sim.step_chunk(actions, render="last", active=~done)  # finished envs do not step
                frames, states = out.frames[:, -1], out.states.astype(np.float32)
                for b in live:
                    if out.success[b]:
                        to_success[b] = steps[b] + out.first_success[b]  # the exact step, not the chunk's end
                    steps[b] += out.steps[b]
                    if keep[b]:
                        movie[b].append(frames[b])
                    if out.success[b] or steps[b] >= cfg.max_episode_steps or out.steps[b] == 0:
                        done[b] = True
            for b, p in enumerate(batch):
                ok = bool(to_success[b] >= 0)
                results.append(EpisodeResult(p.suite.name, p.spec.task, p.episode, p.spec.seed, ok, int(steps[b]),
                                             int(to_success[b]) if ok else None,
                                             [float(x) for x in initial[b]]))
                keeper.offer(p.suite.name, p.spec.task, p.episode, ok, lambda b=b: np.stack(movie[b]),
                             FPS / chunk_len)
            bar.update(n)
    return EvalResults(name, tasks, suites, results, skipped, keeper.videos, cfg.episodes_per_task,
                       cfg.max_episode_steps, cfg.seed_base, chunk_len, time.time() - start,
                       nominal_episodes_per_task=cfg.nominal_episodes)


def evaluate_expert(tasks: Sequence[str], suites: Sequence[Suite] | None, cfg: EvaluateConfig, sim, *,
                    chunk_len: int = 8, progress: bool = True) -> EvalResults:
    """The scripted expert (no action noise) on exactly the episodes :func:`evaluate_policy` runs.

    The expert reads Meta-World's full observation (privileged state), so it is the reference
    a pixel policy can at best reach. It renders (and its GIFs keep) one frame every ``chunk_len``
    steps, like the policies: rendering is most of a step's cost.
    """
    start = time.time()
    tasks, suites, plan, skipped, keeper = _plan(tasks, suites, cfg)
    results: list[EpisodeResult] = []
    with _episode_limit(sim, cfg.max_episode_steps), _progress(len(plan), "evaluate expert", progress) as bar:
        # in batches, so only a batch of full-rate frame stacks (<= 1.8 MiB an episode) is held at a
        # time; record_episodes keeps every worker busy within a batch, so batches can be large
        for batch in _batches(plan, _EXPERT_BATCH):
            records = sim.record_episodes([p.spec for p in batch], [0.0] * len(batch), 0, progress=bar,
                                          render_every=chunk_len)
            for p, rec in zip(batch, records):
                ok = bool(rec.success)
                results.append(EpisodeResult(p.suite.name, p.spec.task, p.episode, p.spec.seed, ok, rec.length,
                                             int(rec.first_success_step) if ok else None,
                                             [float(x) for x in rec.states[0]]))
                keeper.offer(p.suite.name, p.spec.task, p.episode, ok,
                             lambda rec=rec: rec.frames.copy(), FPS / chunk_len)
    return EvalResults(EXPERT, tasks, suites, results, skipped, keeper.videos, cfg.episodes_per_task,
                       cfg.max_episode_steps, cfg.seed_base, None, time.time() - start,
                       nominal_episodes_per_task=cfg.nominal_episodes)


def make_simulator(sim_cfg, cfg: EvaluateConfig):
    """The real simulator as ``sim_cfg`` renders it, with this evaluation's workers and step limit."""
    from vla_rft.sim.vector import BatchedSimulator

    sim = BatchedSimulator.from_config(sim_cfg, num_workers=cfg.num_workers)
    sim.max_episode_steps = cfg.max_episode_steps
    return sim


def run_evaluation(policies: Mapping[str, PolicyFn], tasks: Sequence[str], cfg: EvaluateConfig, sim_cfg, *,
                   expert: bool = True, chunk_len: int = 8, progress: bool = True,
                   suites: Sequence[Suite] | None = None) -> list[EvalResults]:
    """Every policy, then (``expert=True``) the scripted expert, on the same episodes and one simulator.

    ``policies`` maps report names (e.g. ``{"base": act_base, "rft": act_rft}``) to callables; the
    task list must be the one the policies' ``task_index`` was trained on. ``suites``: a subset of
    ``cfg.suite_list()`` (one branch of a fanned-out evaluation); None runs them all.
    """
    from vla_rft.evaluation.configuration import check_policy_name

    for name in policies:
        check_policy_name(name)  # names become report paths
    out = []
    with make_simulator(sim_cfg, cfg) as sim:
        for name, act in policies.items():
            out.append(evaluate_policy(act, tasks, suites, cfg, sim, name=name, progress=progress))
        if expert:
            out.append(evaluate_expert(tasks, suites, cfg, sim, chunk_len=chunk_len, progress=progress))
    return out


RESULTS_FILE, VIDEOS_FILE = "results.json", "videos.npz"


def save_results(results: Sequence[EvalResults], out_dir) -> None:
    """The raw outcomes of an evaluation (episodes, n/a cells, kept videos' frames) for a later merge."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, entries = {}, []
    for r in results:
        videos = []
        for v in r.videos:
            key = f"v{len(frames)}"
            frames[key] = v.frames
            videos.append({"suite": v.suite, "task": v.task, "episode": v.episode, "success": v.success,
                           "fps": v.fps, "frames": key})
        entries.append({**r.to_dict(), "videos": videos})
    (out / RESULTS_FILE).write_text(json.dumps({"results": entries}, indent=1) + "\n")
    np.savez_compressed(out / VIDEOS_FILE, **frames)


def load_results(in_dir) -> list[EvalResults]:
    """What :func:`save_results` wrote, videos included."""
    src = Path(in_dir)
    entries = json.loads((src / RESULTS_FILE).read_text())["results"]
    with np.load(src / VIDEOS_FILE) as frames:
        out = []
        for d in entries:
            r = EvalResults.from_dict(d)
            r.videos = [EpisodeVideo(v["suite"], v["task"], v["episode"], v["success"], frames[v["frames"]], v["fps"])
                        for v in d["videos"]]
            out.append(r)
    return out



def merge_results(parts: Sequence[Sequence[EvalResults]], suites: Sequence[Suite]) -> list[EvalResults]:
    """Evaluations of the same policies on disjoint suites joined into the evaluation of all ``suites``.

    Episodes, n/a cells and videos are taken suite by suite in ``suites`` order, the order one
    evaluation of all suites produces them in (its plan runs suite by suite and its batches never
    span two suites); seconds add up. Raises ValueError when the parts do not fit together.
    """
    owner: dict[str, int] = {}
    for i, part in enumerate(parts):
        if not part:
            raise ValueError(f"evaluation part {i} holds no results")
        names = [r.policy for r in part]
        if names != [r.policy for r in parts[0]]:
            raise ValueError(f"evaluation part {i} evaluated {names}, part 0 {[r.policy for r in parts[0]]}")
        for s in part[0].suites:
            if s.name in owner:
                raise ValueError(f"suite {s.name!r} was evaluated in two parts ({owner[s.name]} and {i})")
            owner[s.name] = i
    missing = [s.name for s in suites if s.name not in owner]
    extra = sorted(set(owner) - {s.name for s in suites})
    if missing or extra:
        raise ValueError(f"the parts do not cover the evaluation's suites: missing {missing}, not expected {extra}")
    out = []
    for j, head in enumerate(parts[0]):
        mine = [part[j] for part in parts]
        for r in mine:
            if r.design() != head.design():
                raise ValueError(f"policy {r.policy!r} was evaluated on other episodes in one part (tasks, "
                                 "episodes per task, max_episode_steps or seed_base differ)")
        cells = [(s.name, mine[owner[s.name]]) for s in suites]
        out.append(EvalResults(
            head.policy, list(head.tasks), list(suites),
            [e for name, r in cells for e in r.episodes if e.suite == name],
            [c for name, r in cells for c in r.not_applicable if c[0] == name],
            [v for name, r in cells for v in r.videos if v.suite == name],
            head.episodes_per_task, head.max_episode_steps, head.seed_base,
            next((r.chunk_len for r in mine if r.chunk_len is not None), None), sum(r.seconds for r in mine),
            nominal_episodes_per_task=head.nominal_episodes_per_task))
    return out
