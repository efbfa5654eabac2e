"""The closed-loop headline: does RFT over imagined episodes beat the base, the paper's chunk RFT and filtered BC?

One command, on the ``standard`` profile (reusing the pipeline's artifacts where given):

    .venv/bin/python benchmarks/closed_loop.py --work runs/benchmark \\
        [--dataset DS --world-model WM --policy BC --rollouts R --grounded WMG --success-model J]

Five rows, every policy on the same real-simulator episodes (nominal and every perturbation suite):

- ``base``: the BC policy;
- ``chunk``: the paper's RFT (one imagined chunk, reward = distance to the expert's imagined frames);
- ``episode``: GRPO over closed-loop imagined episodes judged by the success model, in the world
  model grounded on the base policy's rollouts (``rft.mode: episode``);
- ``control``: ``episode`` with advantages shuffled within each group (what the reward contributes);
- ``filtered_bc``: BC from scratch on the expert data plus the *successful* rollouts (the same
  real-simulator data ``episode`` used, no world model; ``policy.episodes: successful``).

Each method runs once per seed (``--seeds``; ``--methods`` picks a subset). Every training run and
every policy's evaluation is its own artifact under ``--work`` and is skipped when present, so an
interrupted benchmark resumes and more seeds can be added later; per-policy evaluations use the
same seeded episodes (the simulator is deterministic), so they combine into one paired comparison.
Writes ``--out`` (markdown) and its ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from headline import (T_975, _log, _pct, _signed, _stage, combined_evaluation, episodes_text, evaluate_each,  # noqa: E402
                      nominal_n, write_result)

from vla_rft import stages, storage  # noqa: E402
from vla_rft.config import load_config  # noqa: E402

METHODS = ("chunk", "episode", "control", "filtered_bc")
#: run names by method: chunk runs are headline.py's (one work directory serves both benchmarks)
RUN_PREFIX = {"chunk": "rft", "episode": "episode", "control": "control-episode", "filtered_bc": "filtered-bc"}
LABELS = {"base": "base (BC)", "chunk": "chunk RFT (paper)", "episode": "episode RFT (closed loop)",
          "control": "episode RFT, shuffled advantages", "filtered_bc": "filtered BC (expert + successful rollouts)"}


def _bootstrap(episodes: list[dict], names: list[str], base: str, suites: list[str], n_boot: int = 2000,
               seed: int = 0) -> tuple[float, float]:
    """95 % interval of (mean over ``names`` of success) - base's, resampling paired episodes within each
    suite and averaging the suites (the table's perturbed mean weights suites equally)."""
    key = lambda r: (r["suite"], r["task"], r["episode"])  # noqa: E731
    score: dict[tuple, list[int]] = {}
    for r in episodes:
        if r["policy"] in names and r["suite"] in suites:
            score.setdefault(key(r), []).append(int(r["success"]))
    b = {key(r): int(r["success"]) for r in episodes if r["policy"] == base and r["suite"] in suites}
    diffs = {s: np.array([np.mean(v) - b[k] for k, v in score.items() if k[0] == s and len(v) == len(names)])
             for s in suites}
    diffs = {s: d for s, d in diffs.items() if len(d)}
    rng = np.random.default_rng(seed)
    stats = [np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in diffs.values()]) for _ in range(n_boot)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _t_interval(values: list[float]) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    m, half = float(np.mean(values)), T_975[len(values) - 1] * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return m - half, m + half


def analyse(metrics: dict, episodes: list[dict], runs: dict[str, list[str]]) -> dict:
    """Per method and suite: success (mean over seeds), gain over base with a t-interval over seeds and a
    paired bootstrap over episodes; the target check of closed-loop RFT."""
    pol = metrics["policies"]
    suites = [s["name"] for s in metrics["suites"]]
    perturbed = [s for s in suites if s != "nominal"]

    def rate(name: str, suite: str) -> float:
        if suite == "perturbed (mean)":
            return float(np.mean([pol[name]["suites"][s]["success_rate"] for s in perturbed]))
        return pol[name]["suites"][suite]["success_rate"]

    table = {}
    for suite in suites + (["perturbed (mean)"] if perturbed else []):
        boot_suites = perturbed if suite == "perturbed (mean)" else [suite]
        row = {"base": rate("base", suite), "expert": rate("expert", suite) if "expert" in pol else None}
        for method, names in runs.items():
            if not names:
                continue
            seeds = [rate(n, suite) for n in names]
            gains = [s - row["base"] for s in seeds]
            row[method] = {"mean": float(np.mean(seeds)), "seeds": seeds, "gain": float(np.mean(gains)),
                           "gain_ci_seeds": _t_interval(gains),
                           "gain_ci_episodes": _bootstrap(episodes, names, "base", boot_suites)}
        table[suite] = row
    by_task = [{"task": t, "base": pol["base"]["cells"]["nominal"][t]["success_rate"],
                **{m: float(np.mean([pol[n]["cells"]["nominal"][t]["success_rate"] for n in names]))
                   for m, names in runs.items() if names}}
               for t in metrics["tasks"] if pol["base"]["cells"]["nominal"][t]["applicable"]]
    target = None
    if runs.get("episode") and perturbed:
        ep = {s: table[s]["episode"] for s in ("nominal", "perturbed (mean)")}

        def excludes_zero(cell) -> bool:
            lo = cell["gain_ci_seeds"][0] if cell["gain_ci_seeds"][0] is not None else cell["gain_ci_episodes"][0]
            return lo > 0

        beats = {m: all(ep[s]["mean"] > table[s][m]["mean"] for s in ep) for m in ("chunk", "filtered_bc")
                 if runs.get(m)}
        target = {"nominal_gain_points": 100 * ep["nominal"]["gain"],
                  "perturbed_gain_points": 100 * ep["perturbed (mean)"]["gain"],
                  "intervals_exclude_zero": all(excludes_zero(c) for c in ep.values()),
                  "beats": beats,
                  "met": bool(all(c["gain"] >= 0.10 and excludes_zero(c) for c in ep.values())
                              and len(beats) == 2 and all(beats.values()))}
    return {"suites": table, "nominal_by_task": by_task, "target": target}


def _training_rows(work: Path, runs: dict[str, list[str]], shared: dict) -> dict:
    """Per method: real-simulator episodes it trained on, imagined episodes (or chunks), wall time."""
    out = {}
    for method, names in runs.items():
        secs, imagined = [], []
        for n in names:
            s = json.loads(Path(f"{work / n}.summary.json").read_text())
            secs.append(s["seconds"])
            tr = s.get("train") or {}
            if method in ("chunk", "episode", "control"):
                imagined.append(tr.get("steps", 0) * shared["batch_starts"] * shared["group_size"])
        extra = 0.0
        if method in ("episode", "control"):
            extra = sum(shared["seconds"].get(k, 0.0) for k in ("rollouts", "grounded", "success_model"))
        elif method == "filtered_bc":
            extra = shared["seconds"].get("rollouts", 0.0)
        out[method] = {"seeds": len(names), "seconds_per_seed": float(np.mean(secs)) if secs else None,
                       "shared_seconds": extra,
                       "real_episodes": shared["rollout_episodes"] if method in ("episode", "control", "filtered_bc")
                       else 0,
                       "imagined_per_seed": int(np.mean(imagined)) if imagined else 0,
                       "imagined_kind": {"chunk": "one-chunk imaginations"}.get(method, "episodes" if imagined
                                                                               else "none")}
    return out


def render(result: dict) -> str:
    a, meta = result["analysis"], result["meta"]
    methods = [m for m in METHODS if m in result["training"]]
    head = "| suite | base | " + " | ".join(f"{LABELS[m]}: success, gain [seeds CI] [episodes CI]"
                                           for m in methods) + " | expert |"
    lines = ["# Closed-loop RFT: base, chunk RFT, episode RFT, shuffled control, filtered BC", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}; finished {meta['finished']}; this invocation {meta['seconds'] / 60:.1f} min.  ",
             f"Evaluation: real Meta-World, {episodes_text(meta)}, the same "
             f"episodes for every policy (seed base {meta['seed_base']}); seeds {meta['seeds']}.", "",
             "Success in %, mean over seeds; gain in points over base: 95 % t-interval over seeds (n/a with one "
             "seed) and a paired bootstrap over episodes (episode noise only).", "",
             head, "|" + "---|" * (3 + len(methods))]
    for suite, row in a["suites"].items():
        cells = []
        for m in methods:
            c = row.get(m)
            if c is None:
                cells.append("n/a")
                continue
            lo, hi = c["gain_ci_seeds"]
            seeds = "n/a" if lo is None else f"[{_signed(lo)}, {_signed(hi)}]"
            cells.append(f"{_pct(c['mean'])}, {_signed(c['gain'])} {seeds} "
                         f"[{_signed(c['gain_ci_episodes'][0])}, {_signed(c['gain_ci_episodes'][1])}]")
        lines.append(f"| {suite} | {_pct(row['base'])} | " + " | ".join(cells) + f" | {_pct(row['expert'])} |")
    lines += ["", "## What each row cost", "",
              "| method | seeds | real-simulator episodes trained on | imagined per seed | training s per seed "
              "| shared stages s |", "|---|---|---|---|---|---|"]
    for m in methods:
        t = result["training"][m]
        lines.append(f"| {LABELS[m]} | {t['seeds']} | {t['real_episodes']} | {t['imagined_per_seed']} "
                     f"{t['imagined_kind']} | {t['seconds_per_seed']:.0f} | {t['shared_seconds']:.0f} |")
    lines += ["", "Shared stages: collect-rollouts, ground-world-model and train-success-model for the episode "
              "rows; collect-rollouts for filtered BC.", "", "## Nominal, per task (%)", "",
              "| task | base | " + " | ".join(LABELS[m] for m in methods) + " |", "|" + "---|" * (2 + len(methods))]
    for t in a["nominal_by_task"]:
        lines.append(f"| {t['task']} | {_pct(t['base'], 0)} | " + " | ".join(_pct(t.get(m), 0) for m in methods) + " |")
    h, j = result.get("honesty"), result.get("success_model")
    lines += ["", "## Is the imagined outcome honest?", ""]
    num = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    if j:
        auc = j["auc"]
        lines.append(f"Success model: AUC {num(auc.get('all'))} on held-out real frames (val episodes; policy "
                     f"rollouts alone {num(auc.get('source_policy'))}, expert {num(auc.get('source_expert'))}), "
                     f"threshold {j['threshold']:.3f} (rule {j.get('rule')}, on "
                     f"{j.get('calibrated_on', 'real val frames')}).  ")
        if j.get("imagined"):
            im = j["imagined"]
            lines.append(f"Fine-tuned on the grounded world model's replays of the recorded episodes: on the val "
                         f"episodes' replays, frame AUC {num(im['frame_auc'])}, episode AUC {num(im['episode_auc'])} "
                         f"({im['episodes']} replays from reset frames).  ")
    if h:
        corr = h["correlation_across_tasks"]
        lines.append(f"Base policy, {h['episodes']} held-out training-seed layouts: imagined vs real success per task "
                     f"correlate {'n/a' if corr is None else format(corr, '.2f')} (target >= 0.8), mean absolute "
                     f"difference {_pct(h['mean_abs_difference'])} points; hallucination: imagined success on "
                     f"{_pct(h['hallucination_rate'])} % of real failures, {_pct(h['hallucinated_episodes'])} % of all "
                     f"episodes imagined successful and really failed (target <= 10 %), "
                     f"{_pct(h.get('false_success_share'))} % of imagined successes really failed; imagined success "
                     f"on {_pct(h['imagined_success_on_real_success'])} % of real successes; the judge's AUC on the "
                     f"imagined frames against the real outcome {num(h.get('imagined_auc'))}.")
        after = h.get("after_training")
        if after:
            lines.append(f"After episode RFT, the fine-tuned policy on the same layouts: imagined "
                         f"{_pct(after['imagined_success'])} % vs real {_pct(after['real_success'])} %, hallucination "
                         f"{_pct(after['hallucination_rate'])} % of real failures, imagined AUC "
                         f"{num(after.get('imagined_auc'))}.")
        per_after = (after or {}).get("per_task", {})
        lines += ["", "| task | episodes | imagined | real |" + (" imagined after RFT | real after RFT |" if after else ""),
                  "|---|---|---|---|" + ("---|---|" if after else "")]
        lines += [f"| {t} | {v['episodes']} | {_pct(v['imagined_success'], 0)} | {_pct(v['real_success'], 0)} |"
                  + (f" {_pct(per_after[t]['imagined_success'], 0)} | {_pct(per_after[t]['real_success'], 0)} |"
                     if t in per_after else ("  |  |" if after else ""))
                  for t, v in h["per_task"].items()]
    t = a.get("target")
    if t:
        lines += ["", f"**Target** (episode RFT >= +10 points nominal and on the perturbed mean, intervals excluding "
                      f"zero, above chunk RFT and filtered BC on both): **{'met' if t['met'] else 'not met'}** — "
                      f"nominal {t['nominal_gain_points']:+.1f}, perturbed {t['perturbed_gain_points']:+.1f} points; "
                      f"intervals exclude zero: {'yes' if t['intervals_exclude_zero'] else 'no'}; beats: "
                      + ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in t["beats"].items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/benchmark",
                    help="where the artifacts go (reused when present; the same as headline.py's)")
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    for name, what in (("dataset", "the expert dataset"), ("world-model", "the expert-trained world model"),
                       ("policy", "the BC base policy"), ("rollouts", "the base policy's rollouts"),
                       ("grounded", "the world model grounded on them"), ("success-model", "the success model")):
        ap.add_argument(f"--{name}", help=f"reuse {what} instead of making it under --work")
    ap.add_argument("--reuse", action="append", default=[], metavar="RUN=URI",
                    help="reuse a finished run, e.g. rft-s0=<the pipeline's rft policy> (same config and seed)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "closed_loop_mt10.md"))
    args = ap.parse_args()
    start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.params, args.profile, args.overrides)
    reuse = dict(item.split("=", 1) for item in args.reuse)

    def at(name: str, given: str | None = None) -> str:
        return given or reuse.get(name) or str(work / name)

    dataset, wm, base = at("dataset", args.dataset), at("world_model", args.world_model), at("policy_bc", args.policy)
    _stage("prepare-data", dataset, lambda: stages.prepare_data(cfg, dataset, progress=False))
    _stage("train-world-model", wm, lambda: stages.train_world_model(cfg, dataset, wm, progress=False))
    _stage("pretrain-policy", base, lambda: stages.pretrain_policy(cfg, dataset, base, progress=False))
    seconds = {}
    needs_rollouts = any(m in args.methods for m in ("episode", "control", "filtered_bc"))
    rollouts = at("rollouts", args.rollouts)
    if needs_rollouts:
        s = _stage("collect-rollouts", rollouts, lambda: stages.collect_rollouts(cfg, base, rollouts, progress=False))
        seconds["rollouts"] = (s or {}).get("seconds", 0.0)
    grounded, judge = at("world_model_grounded", args.grounded), at("success_model", args.success_model)
    if any(m in args.methods for m in ("episode", "control")):
        s = _stage("ground-world-model", grounded, lambda: stages.ground_world_model(
            cfg, dataset, rollouts, wm, grounded, progress=False))
        seconds["grounded"] = (s or {}).get("seconds", 0.0)
        s = _stage("train-success-model", judge, lambda: stages.train_success_model(
            cfg, [dataset, rollouts], judge, world_model_uri=grounded, progress=False))
        seconds["success_model"] = (s or {}).get("seconds", 0.0)

    extra = {"chunk": [], "episode": ["rft.mode=episode"], "control": ["rft.mode=episode", "rft.shuffle_advantages=true"],
             "filtered_bc": ["policy.episodes=successful"]}
    runs: dict[str, list[str]] = {}
    for method in args.methods:
        for i, seed in enumerate(args.seeds):
            name = f"{RUN_PREFIX[method]}-s{seed}"
            uri = at(name)
            c = load_config(args.params, args.profile, [*args.overrides, *extra[method], f"common.seed={seed}"])
            first = i == 0 and method in ("chunk", "episode")  # the reward check / honesty once per mode
            if method == "chunk":
                fn = lambda c=c, u=uri, v=first: stages.rft(c, dataset, wm, base, u, verify=v, progress=False)  # noqa: E731
            elif method in ("episode", "control"):
                fn = lambda c=c, u=uri, v=first: stages.rft(c, dataset, grounded, base, u, verify=v,  # noqa: E731
                                                           progress=False, success_model_uri=judge,
                                                           rollouts_uri=rollouts)
            else:
                fn = lambda c=c, u=uri: stages.pretrain_policy(c, [dataset, rollouts], u, progress=False)  # noqa: E731
            _stage(name, uri, fn)
            if not Path(f"{work / name}.summary.json").exists():  # reused from elsewhere: record its summary
                model_dir, _ = storage.read_artifact(uri, expected_kind="policy")
                summary = model_dir / ("summary.json" if method != "filtered_bc" else "bc_summary.json")
                train = json.loads(summary.read_text())
                Path(f"{work / name}.summary.json").write_text(json.dumps({"train": train,
                                                                          "seconds": train.get("seconds", 0.0)}))
            runs.setdefault(method, []).append(name)

    policies = {"base": base, **{n: at(n) for names in runs.values() for n in names}}
    metrics, episodes = combined_evaluation(evaluate_each(cfg, policies, work))
    honesty = success = None
    if runs.get("episode"):
        model_dir, _ = storage.read_artifact(at(runs["episode"][0]), expected_kind="policy")
        if (model_dir / "honesty.json").exists():
            honesty = json.loads((model_dir / "honesty.json").read_text())
    if any(m in args.methods for m in ("episode", "control")):
        from vla_rft.success.modeling import CALIBRATION_NAME

        judge_dir, _ = storage.read_artifact(judge, expected_kind="success_model")
        success = json.loads((judge_dir / CALIBRATION_NAME).read_text())
    base_entry = metrics["policies"]["base"]
    roll_episodes = None
    if needs_rollouts:
        from vla_rft.data import load_dataset

        roll_dir, _ = storage.read_artifact(rollouts, expected_kind="dataset")
        roll_episodes = len(load_dataset(roll_dir).episodes)
    shared = {"seconds": seconds, "rollout_episodes": roll_episodes, "batch_starts": cfg.rft.batch_starts,
              "group_size": cfg.rft.group_size}
    result = {
        "meta": {"command": "python benchmarks/closed_loop.py " + " ".join(sys.argv[1:]),
                 "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, device {cfg.common.device}",
                 "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": time.time() - start,
                 "profile": args.profile, "seeds": args.seeds, "episodes_per_task": base_entry["episodes_per_task"],
                 "nominal_episodes_per_task": nominal_n(base_entry), "seed_base": base_entry["seed_base"],
                 "artifacts": {"dataset": dataset, "world_model": wm, "base": base, "rollouts": rollouts,
                               "grounded": grounded, "success_model": judge}},
        "analysis": analyse(metrics, episodes, runs), "training": _training_rows(work, runs, shared),
        "honesty": honesty, "success_model": success,
    }
    write_result(Path(args.out), result, render)


if __name__ == "__main__":
    main()
