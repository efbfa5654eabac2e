"""KFP components, one per stage: thin wrappers that build the config and call ``vla_rft.stages``.

Components are made by :func:`build_components` for a given image, because a KFP component's
base image is fixed when it is compiled. The image has every dependency baked in, so nothing is
pip-installed at run time (``install_kfp_package=False``; air-gapped clusters have no PyPI).
Each function body imports ``vla_rft`` itself: KFP ships the body's source, not this module;
what the bodies share lives in :mod:`vla_rft.components.outputs`.

The first task, ``configure``, resolves the run's whole configuration once (params.yaml as
``params_json``, the profile, the typed knobs, the ``overrides`` list) and fails the run before
any training when a value is wrong; every stage gets the resolved config as one JSON string
(a dict parameter would become a protobuf Struct, which turns every integer into a float).
"""

from typing import List, NamedTuple  # noqa: UP035 - KFP reads typing.List in Input[List[...]]

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "ghcr.io/vla-rft/vla-rft:0.1.0"


def build_components(image: str = DEFAULT_IMAGE) -> dict:
    """The stage components for ``image``, by stage name."""

    @dsl.component(base_image=image, install_kfp_package=False)
    def configure(params_json: str, profile: str, overrides: list, tasks: str, episodes_per_task: int,
                  world_model_steps: int, bc_steps: int, rft_steps: int, group_size: int,
                  eval_episodes_per_task: int, device: str, registry: str, data_source: str, base_policy: str,
                  dvc_repo: str, accumulate_rollouts: bool, config: Output[Markdown]) -> str:
        """Resolve and validate the run's configuration: params.yaml, profile, knobs, then overrides."""
        import json

        from vla_rft.components import outputs

        resolved = outputs.resolve_config(
            params_json, profile, overrides, tasks=tasks, episodes_per_task=episodes_per_task,
            world_model_steps=world_model_steps, bc_steps=bc_steps, rft_steps=rft_steps, group_size=group_size,
            eval_episodes_per_task=eval_episodes_per_task, device=device, registry=registry, data_source=data_source,
            base_policy=base_policy, dvc_repo=dvc_repo, accumulate_rollouts=accumulate_rollouts)
        rows = [("profile", resolved["profile"])] + [(key, resolved[key.split(".")[0]][key.split(".")[1]])
                                                     for key in outputs.KNOBS.values()]
        with open(config.path, "w") as f:
            f.write("# configure\n\nThe values this run uses (profile, then the knobs set, then overrides).\n\n"
                    + outputs.markdown_table(rows, ("parameter", "value"))
                    + "\nOverrides: " + (", ".join(f"`{o}`" for o in overrides) or "none") + "\n")
        return json.dumps(resolved, sort_keys=True)

    @dsl.component(base_image=image, install_kfp_package=False)
    def prepare_data(config_json: str, dataset: Output[Dataset], summary: Output[Markdown]
                     ) -> NamedTuple("Outputs", [("episodes", int), ("expert_success", float)]):
        """Record scripted-expert episodes in Meta-World as a Parquet dataset (or take ``data.source``'s).

        ``expert_success`` is -1 where the dataset records no expert rollouts (e.g. an imported LeRobot
        dataset): KFP cannot serialise NaN into metadata or outputs."""
        import math
        from collections import namedtuple

        from vla_rft import stages
        from vla_rft.components import outputs

        result = stages.prepare_data(outputs.stage_config(config_json), dataset.path, overwrite=True, progress=False)
        known = math.isfinite(result["expert_success"])
        dataset.metadata.update({k: result[k] for k in ("episodes", "frames")})
        if known:
            dataset.metadata["expert_success"] = result["expert_success"]
        rows = [("episodes (train / val)", f"{result['episodes']} ({result['splits']['train']} / "
                                           f"{result['splits']['val']})"),
                ("frames", result["frames"]),
                ("expert success", f"{result['expert_success']:.1%}" if known else "n/a (no expert rollouts recorded)")]
        rows += [(f"expert success: {task}", f"{s['success_rate']:.0%}") for task, s in result["expert_per_task"].items()]
        rows += [("size (MiB)", result["size_bytes"] / 2**20), ("seconds", result["seconds"])]
        with open(summary.path, "w") as f:
            f.write("# prepare-data\n\n" + outputs.markdown_table(rows))
        return namedtuple("Outputs", ["episodes", "expert_success"])(
            int(result["episodes"]), float(result["expert_success"]) if known else -1.0)

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_world_model(config_json: str, dataset: Input[Dataset], world_model: Output[Model],
                          fidelity: Output[Metrics], summary: Output[Markdown], nodes: int = 1,
                          procs_per_node: int = 1, gpus: int = 0, image: str = ""):
        """Train the action-conditioned video model; log its fidelity against the baselines."""
        from vla_rft import stages
        from vla_rft.components import outputs

        if nodes * procs_per_node > 1:  # a TrainJob trains; this pod submits, waits and verifies
            from vla_rft.components import trainjob

            trainjob.run_stage("train-world-model", config_json, {"--dataset": dataset.uri}, world_model.path,
                               world_model.uri, kind="world_model", nodes=nodes, procs_per_node=procs_per_node,
                               image=image, gpus=gpus)
            result = outputs.trained_summary(world_model.path)
        else:
            result = stages.train_world_model(outputs.stage_config(config_json), dataset.path, world_model.path,
                                              overwrite=True, checkpoint_dir=world_model.path + ".ckpt",
                                              progress=False)
        # per-step lists and chunk indices stay in the artifact; the UI gets means and targets
        shown = {k: v for k, v in outputs.flat_metrics(result["fidelity"]).items()
                 if "/mean/" in k or k.startswith("targets/")}
        for name, value in shown.items():
            fidelity.log_metric(name, value)
        targets = [(k.removeprefix("targets/"), v) for k, v in shown.items() if k.startswith("targets/")]
        with open(summary.path, "w") as f:
            f.write("# train-world-model\n\n" + outputs.markdown_table(
                [("steps", result["train"].get("steps")), ("seconds", result["seconds"])], ("training", ""))
                + "\n" + outputs.fidelity_table(result["fidelity"])
                + ("\n" + outputs.markdown_table(targets, ("fidelity target", "value")) if targets else "")
                + "\n" + outputs.curves_markdown(world_model.path, ["loss", "pixel_loss", "state_loss"],
                                                 "world-model training loss"))

    @dsl.component(base_image=image, install_kfp_package=False)
    def pretrain_policy(config_json: str, dataset: Input[Dataset], policy: Output[Model], training: Output[Metrics],
                        summary: Output[Markdown], nodes: int = 1, procs_per_node: int = 1, gpus: int = 0,
                        image: str = ""):
        """Behaviour-clone the VLA policy on the expert chunks."""
        from vla_rft import stages
        from vla_rft.components import outputs

        if nodes * procs_per_node > 1:  # a TrainJob trains; this pod submits, waits and verifies
            from vla_rft.components import trainjob

            trainjob.run_stage("pretrain-policy", config_json, {"--dataset": dataset.uri}, policy.path, policy.uri,
                               kind="policy", nodes=nodes, procs_per_node=procs_per_node, image=image, gpus=gpus)
            result = outputs.trained_summary(policy.path)
        else:
            result = stages.pretrain_policy(outputs.stage_config(config_json), dataset.path, policy.path,
                                            overwrite=True, checkpoint_dir=policy.path + ".ckpt", progress=False)
        scalars = {k: v for k, v in result["train"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        policy.metadata.update(scalars)
        for name, value in outputs.flat_metrics(scalars).items():
            training.log_metric(name, value)
        with open(summary.path, "w") as f:
            f.write("# pretrain-policy\n\n" + outputs.markdown_table(sorted(scalars.items()), ("behaviour cloning", "value"))
                    + "\n" + outputs.curves_markdown(policy.path, ["loss", "val_loss"], "behaviour-cloning loss"))

    @dsl.component(base_image=image, install_kfp_package=False)
    def rft(config_json: str, dataset: Input[Dataset], world_model: Input[Model], base_policy: Input[Model],
            policy: Output[Model], training: Output[Metrics], summary: Output[Markdown], nodes: int = 1,
            procs_per_node: int = 1, gpus: int = 0, image: str = ""):
        """GRPO with verified rewards in the world model."""
        from vla_rft import stages
        from vla_rft.components import outputs

        if nodes * procs_per_node > 1:  # a TrainJob trains; this pod submits, waits and verifies
            from vla_rft.components import trainjob

            trainjob.run_stage("rft", config_json, {"--dataset": dataset.uri, "--world-model": world_model.uri,
                                                    "--policy": base_policy.uri}, policy.path, policy.uri,
                               kind="policy", nodes=nodes, procs_per_node=procs_per_node, image=image, gpus=gpus)
            result = outputs.trained_summary(policy.path)
        else:
            result = stages.rft(outputs.stage_config(config_json), dataset.path, world_model.path, base_policy.path,
                                policy.path, overwrite=True, checkpoint_dir=policy.path + ".ckpt", progress=False)
        shown = outputs.flat_metrics({"train": result["train"], "reward_fidelity": result["reward_fidelity"] or {}})
        for name, value in shown.items():
            training.log_metric(name, value)
        with open(summary.path, "w") as f:
            f.write("# rft\n\n" + outputs.markdown_table(sorted(shown.items()), ("GRPO", "value"))
                    + "\n" + outputs.curves_markdown(policy.path, ["reward_mean"], "GRPO reward (mean over groups)"))

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluation_suites(config_json: str) -> list:
        """One evaluate-suite branch per suite of evaluate.suites (report order): {"suite", "config_json"} as JSON.

        Each item carries the config: kfp.local (2.17.3) hands every parameter input of a ParallelFor
        body the loop item, so the body takes no other parameter.
        """
        import json

        from vla_rft.components import outputs

        return [json.dumps({"suite": s.name, "config_json": config_json})
                for s in outputs.stage_config(config_json).evaluate.suite_list()]

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluate_suite(branch: str, base_policy: Input[Model], rft_policy: Input[Model], part: Output[Dataset]):
        """One suite: base and RFT policies and the scripted expert in the real simulator (a part to merge)."""
        import json

        from vla_rft import stages
        from vla_rft.components import outputs

        item = json.loads(branch)
        suite = item["suite"]
        result = stages.evaluate(outputs.stage_config(item["config_json"]),
                                 {"base": base_policy.path, "rft": rft_policy.path}, part.path, overwrite=True,
                                 progress=False, suites=[suite])
        part.metadata.update({"suite": suite, "seconds": result["seconds"]})

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluate(config_json: str, parts: Input[List[Dataset]], world_model: Input[Model],
                 evaluation: Output[Dataset], metrics: Output[Metrics], report: Output[HTML],
                 summary: Output[Markdown]):
        """The evaluation of base, RFT and the expert on every suite, merged from the evaluate-suite branches."""
        import shutil
        from pathlib import Path

        from vla_rft import stages
        from vla_rft.components import outputs

        result = stages.merge_evaluations(outputs.stage_config(config_json), [p.path for p in parts], evaluation.path,
                                          world_model_uri=world_model.path, overwrite=True)
        for name, value in outputs.kfp_success_metrics(result["metrics"]).items():
            metrics.log_metric(name, value)
        out = Path(evaluation.path)
        shutil.copyfile(out / "summary.md", summary.path)
        # the UI serves the HTML artifact as one file: the plots and GIFs travel inside it as data URIs
        Path(report.path).write_text(outputs.inline_images((out / "report.html").read_text(), str(out)))

    @dsl.component(base_image=image, install_kfp_package=False)
    def promote(config_json: str, policy: Input[Model], evaluation: Input[Dataset], decision: Output[Markdown]
                ) -> NamedTuple("Outputs", [("promoted", bool), ("reason", str), ("version", str),
                                            ("candidate_score", float)]):
        """Champion/challenger: publish the RFT policy to the registry only if it beats the champion."""
        from collections import namedtuple

        from vla_rft import stages
        from vla_rft.components import outputs

        cfg = outputs.stage_config(config_json)
        result = stages.promote(cfg, policy.path, evaluation.path, registry=cfg.promote.registry or None)
        champion = result.get("champion") or {}
        rows = [("promoted", result["promoted"]), ("reason", result["reason"]), ("version", result.get("version")),
                ("metric", result["metric"]), ("candidate score", result["candidate_score"]),
                ("champion before", champion.get("version")), ("champion score", champion.get("score")),
                ("registry", cfg.promote.registry)]
        with open(decision.path, "w") as f:
            f.write("# promote\n\n" + outputs.markdown_table(rows, ("decision", "")))
        return namedtuple("Outputs", ["promoted", "reason", "version", "candidate_score"])(
            bool(result["promoted"]), str(result["reason"]), str(result.get("version") or ""),
            float(result["candidate_score"]))

    @dsl.component(base_image=image, install_kfp_package=False)
    def collect_rollouts(config_json: str, base_policy: Input[Model], rollouts: Output[Dataset],
                         summary: Output[Markdown]):
        """The base policy with exploration noise in the real simulator on training seeds, failures kept."""
        from vla_rft import stages
        from vla_rft.components import outputs

        result = stages.collect_rollouts(outputs.stage_config(config_json), base_policy.path, rollouts.path,
                                         overwrite=True, progress=False)
        rollouts.metadata.update({k: result[k] for k in ("episodes", "frames", "success_rate")})
        rows = [("episodes", result["episodes"]), ("seeds", f"{result['seeds'][0]}..{result['seeds'][1] - 1}"),
                ("policy success", f"{result['success_rate']:.1%}")]
        rows += [(f"policy success: {t}", f"{v:.0%}") for t, v in result["success_per_task"].items()]
        if result["version"]:  # data.accumulate_rollouts: the rollouts history's new DVC version
            rows += [("rollouts version", f"{result['version']['tag']} ({result['version']['commit'][:12]}), "
                                          f"{result['episodes']} episodes in all")]
        with open(summary.path, "w") as f:
            f.write("# collect-rollouts\n\n" + outputs.markdown_table(rows + [("seconds", result["seconds"])]))

    @dsl.component(base_image=image, install_kfp_package=False)
    def ground_world_model(config_json: str, dataset: Input[Dataset], rollouts: Input[Dataset],
                           world_model: Input[Model], grounded: Output[Model], summary: Output[Markdown]):
        """The world model fine-tuned on expert data + the policy's rollouts."""
        from vla_rft import stages
        from vla_rft.components import outputs

        result = stages.ground_world_model(outputs.stage_config(config_json), dataset.path, rollouts.path,
                                           world_model.path, grounded.path, overwrite=True,
                                           checkpoint_dir=grounded.path + ".ckpt", progress=False)
        with open(summary.path, "w") as f:
            f.write("# ground-world-model\n\n" + outputs.fidelity_table(result["fidelity"]))

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_success_model(config_json: str, dataset: Input[Dataset], rollouts: Input[Dataset],
                            world_model: Input[Model], success_model: Output[Model], calibration: Output[Metrics],
                            summary: Output[Markdown]):
        """The success judge on real frames (expert + rollouts), fine-tuned on the grounded world model's
        replays of them; threshold calibrated on the val episodes' replays."""
        from vla_rft import stages
        from vla_rft.components import outputs

        result = stages.train_success_model(outputs.stage_config(config_json), [dataset.path, rollouts.path],
                                            success_model.path, world_model_uri=world_model.path, overwrite=True,
                                            checkpoint_dir=success_model.path + ".ckpt", progress=False)
        shown = outputs.flat_metrics(result["train"]["calibration"])
        for name, value in shown.items():
            calibration.log_metric(name, value)
        with open(summary.path, "w") as f:
            f.write("# train-success-model\n\n" + outputs.markdown_table(sorted(shown.items()), ("calibration", "")))

    @dsl.component(base_image=image, install_kfp_package=False)
    def rft_episode(config_json: str, dataset: Input[Dataset], rollouts: Input[Dataset], world_model: Input[Model],
                    base_policy: Input[Model], success_model: Input[Model], policy: Output[Model],
                    training: Output[Metrics], summary: Output[Markdown]):
        """GRPO over closed-loop imagined episodes judged by the success model; honesty.json in the artifact."""
        import dataclasses

        from vla_rft import stages
        from vla_rft.components import outputs

        cfg = outputs.stage_config(config_json)
        cfg.rft = dataclasses.replace(cfg.rft, mode="episode")
        result = stages.rft(cfg, dataset.path, world_model.path, base_policy.path, policy.path, overwrite=True,
                            checkpoint_dir=policy.path + ".ckpt", progress=False,
                            success_model_uri=success_model.path, rollouts_uri=rollouts.path)
        shown = outputs.flat_metrics({"train": result["train"], "honesty": result["honesty"] or {}})
        for name, value in shown.items():
            training.log_metric(name, value)
        warnings = (result["honesty"] or {}).get("warnings", [])
        with open(summary.path, "w") as f:
            f.write("# rft (episode)\n\n" + "".join(f"**{w}**\n\n" for w in warnings)
                    + outputs.markdown_table(sorted(shown.items()), ("GRPO over imagined episodes", "value"))
                    + "\n" + outputs.curves_markdown(policy.path, ["success_rate"], "imagined success rate"))

    return {"configure": configure, "prepare-data": prepare_data, "train-world-model": train_world_model,
            "pretrain-policy": pretrain_policy, "rft": rft, "evaluation-suites": evaluation_suites,
            "evaluate-suite": evaluate_suite, "evaluate": evaluate, "promote": promote,
            "collect-rollouts": collect_rollouts, "ground-world-model": ground_world_model,
            "train-success-model": train_success_model, "rft-episode": rft_episode}
