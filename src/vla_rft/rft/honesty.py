"""Does the world model + success model tell the truth? Imagined vs real success of the base policy.

On the same start layouts (training-range seeds held out from the data, never evaluation seeds),
the base policy (acting with its mean) runs in the real simulator and, from the same real reset
frame and state, in the world model for the same number of chunks; the success model judges the
imagined episode. Reported: imagined and real success per task, their correlation across tasks,
the mean absolute difference, and the hallucination rate (imagined success on a real failure).
The RFT stage runs it for the base policy before training and for the fine-tuned one after.
"""

from __future__ import annotations

import numpy as np
import torch

from vla_rft.rft.episode import (
    episode_outcomes, judge_probabilities, per_episode_threshold, pessimistic_probabilities, veto_probabilities,
)
from vla_rft.sim.perturbations import EpisodeSpec
from vla_rft.sim.rollouts import record_policy_episodes
from vla_rft.success.train import roc_auc
from vla_rft.tasks import instruction_order
from vla_rft.world_model.imagine import imagine_episodes


def honesty_from_outcomes(tasks: list[str], task_of: np.ndarray, imagined: np.ndarray, real: np.ndarray) -> dict:
    """The honesty numbers from per-episode outcomes (bool arrays) and each episode's task name."""
    per_task = {}
    for t in tasks:
        sel = task_of == t
        if sel.any():
            per_task[t] = {"episodes": int(sel.sum()), "imagined_success": float(imagined[sel].mean()),
                           "real_success": float(real[sel].mean())}
    im = np.array([v["imagined_success"] for v in per_task.values()])
    re = np.array([v["real_success"] for v in per_task.values()])
    corr = float(np.corrcoef(im, re)[0, 1]) if len(im) > 1 and im.std() > 0 and re.std() > 0 else None
    fails, wins = ~real, real
    halluc = float(imagined[fails].mean()) if fails.any() else None
    detect = float(imagined[wins].mean()) if wins.any() else None
    warnings = []
    if halluc is not None and detect is not None and detect - halluc < 0.2:
        warnings.append(f"WARNING: the world model cannot tell success from failure: imagined success is "
                        f"{detect:.0%} on real successes and {halluc:.0%} on real failures")
    elif halluc is not None and halluc >= 0.5:
        warnings.append(f"WARNING: {halluc:.0%} of real failures are imagined as successes (hallucination)")
    return {
        "episodes": int(len(real)), "per_task": per_task, "correlation_across_tasks": corr,
        "mean_abs_difference": float(np.abs(im - re).mean()) if len(im) else None,
        "hallucination_rate": halluc,  #: P(imagined success | real failure)
        "hallucinated_episodes": float((imagined & ~real).mean()) if len(real) else None,  #: P(imagined success, real failure)
        #: P(real failure | imagined success): how often a success reward RFT would get is false
        "false_success_share": float((~real[imagined]).mean()) if imagined.any() else None,
        "imagined_success_on_real_success": detect,
        "imagined_success": float(imagined.mean()), "real_success": float(real.mean()), "warnings": warnings,
    }


def exploitation_warnings(before: dict, after: dict, margin: float = 0.1) -> list[str]:
    """A warning when the fine-tuned policy's hallucination rate (``after``) is ``margin`` or more
    above the base policy's (``before``), both from :func:`honesty_from_outcomes` on the same layouts:
    RFT has found actions the world model and the judge reward but the simulator does not."""
    b, a = before.get("hallucination_rate") or 0.0, after.get("hallucination_rate")
    if a is None or a < b + margin:
        return []
    return [f"WARNING: after RFT {a:.0%} of the fine-tuned policy's real failures are imagined as successes "
            f"(base policy {b:.0%}): it exploits the world model and the judge"]


def honesty_check(policy, world_model, success_model, threshold: float | dict[str, float], sim, tasks: list[str], *,
                  episodes_per_task: int, seed_offset: int, horizon: int, batch_size: int = 12,
                  veto_world_model=None) -> dict:
    """Run the check (see the module docstring); ``sim`` is a real BatchedSimulator. With
    ``veto_world_model`` the imagined outcome is the pessimistic one episode RFT then trains on: the
    lower of the judge's probabilities on the two models' frames, chunk by chunk (the second model
    replays the first one's actions open loop)."""
    specs = [EpisodeSpec(t, seed_offset + i) for i in range(episodes_per_task) for t in tasks]
    k = policy.chunk_len
    # index into ``tasks`` -> the policy's own task index, matched by instruction text
    to_policy = np.array(instruction_order(policy.instructions, tasks))
    act_np = lambda f, s, ti: policy.act(f, s, to_policy[np.asarray(ti)])  # noqa: E731 - the mean, as evaluation acts
    real = record_policy_episodes(sim, specs, act_np, tasks, max_steps=horizon * k, record=False,
                                  batch_size=batch_size)
    obs = sim.reset(specs)  # the same layouts again: their reset frames start the imagination
    images = torch.from_numpy(np.ascontiguousarray(obs.frames.transpose(0, 3, 1, 2)))
    task_index = torch.tensor([tasks.index(s.task) for s in specs])

    def act(img, st, ti, _h):
        with torch.no_grad():
            return policy(img, st, torch.from_numpy(to_policy)[ti]).mean.cpu()

    start_states, start_env = torch.from_numpy(obs.states), torch.from_numpy(obs.env_states)
    episodes = imagine_episodes(world_model, act, images, world_model.model_states(start_states, start_env),
                                task_index, horizon)
    judge_tasks = torch.as_tensor(success_model.task_order(tasks))[task_index]
    probs = judge_probabilities(success_model, episodes, judge_tasks.repeat_interleave(horizon))
    if veto_world_model is not None:
        probs = pessimistic_probabilities(probs, veto_probabilities(
            veto_world_model, success_model, episodes, images, start_states, task_index,
            judge_tasks.repeat_interleave(horizon), start_env))
    imagined, _ = episode_outcomes(probs.cpu(), per_episode_threshold(threshold, success_model, judge_tasks))
    real_success = np.array([r.success for r in real])
    out = honesty_from_outcomes(tasks, np.array([s.task for s in specs]), imagined.numpy(), real_success)
    out.update({"seeds": [seed_offset, seed_offset + episodes_per_task], "horizon_chunks": horizon,
                "threshold": threshold, "veto_world_model": veto_world_model is not None,
                #: per start layout, in the order of ``seeds`` x tasks: what paired comparisons need
                "episode_outcomes": {"task": [s.task for s in specs], "seed": [s.seed for s in specs],
                                     "imagined": imagined.int().tolist(), "real": real_success.astype(int).tolist()},
                #: the judge on imagined frames vs the real outcome of the same policy from the same layout:
                #: AUC of the episode's highest success probability
                "imagined_auc": roc_auc(probs.max(1).values.cpu().numpy(), real_success)})
    return out


def success_threshold(cfg, success_model) -> float | dict[str, float]:
    """The success probability an imagined episode must reach, by ``rft.success_threshold_source``:
    the judge's calibrated threshold (``calibrated``), its threshold per task name (``per_task``),
    or ``rft.success_threshold`` (``fixed``)."""
    source = cfg.rft.success_threshold_source
    if source == "fixed":
        return cfg.rft.success_threshold
    if source == "per_task":
        if not success_model.task_thresholds:
            raise ValueError("rft.success_threshold_source: per_task needs a success model calibrated per task "
                             "(thresholds_per_task in its calibration.json); this one predates them: "
                             "train it again with train-success-model")
        return dict(success_model.task_thresholds)
    return success_model.threshold


def honesty_check_from_config(cfg, policy, world_model, success_model, threshold: float | dict[str, float],
                              tasks: list[str], veto_world_model=None) -> dict:
    """:func:`honesty_check` with the layouts, horizon and simulator of a resolved config (the
    ``rft`` section's honesty settings), as the RFT stage and the benchmarks run it."""
    from vla_rft.sim.vector import BatchedSimulator

    with BatchedSimulator.from_config(cfg.sim, min(cfg.sim.num_workers, 2)) as sim:
        return honesty_check(policy, world_model, success_model, threshold, sim, list(tasks),
                             episodes_per_task=cfg.rft.honesty_episodes_per_task,
                             seed_offset=cfg.rft.honesty_seed_offset, horizon=cfg.rft.horizon,
                             batch_size=cfg.collect_rollouts.batch_size, veto_world_model=veto_world_model)
