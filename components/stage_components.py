"""KFP components, one per stage: thin wrappers that build the config and call ``vla_rft.stages``.

Components are made by :func:`build_components` for a given image, because a KFP component's
base image is fixed when it is compiled. The image has every dependency baked in, so nothing is
pip-installed at run time (``install_kfp_package=False``; air-gapped clusters have no PyPI).
Each function body imports ``vla_rft`` itself: KFP ships the body's source, not this module.
The configuration travels as ``params_json`` (params.yaml as one line of JSON), not as a dict:
KFP stores dict parameters as protobuf Structs, which turn every integer into a float, and a
multi-line string default breaks the comment header of the compiled YAML.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "ghcr.io/vla-rft/vla-rft:0.1.0"


def build_components(image: str = DEFAULT_IMAGE) -> dict:
    """The stage components for ``image``, by stage name."""

    @dsl.component(base_image=image, install_kfp_package=False)
    def prepare_data(params_json: str, profile: str, overrides: list, device: str, dataset: Output[Dataset],
                     summary: Output[Markdown]) -> NamedTuple("Outputs", [("episodes", int), ("expert_success", float)]):
        """Record scripted-expert episodes in Meta-World as a Parquet dataset."""
        import json
        from collections import namedtuple

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile,
                               overrides=[*overrides, f"common.device={device}"])
        result = stages.prepare_data(cfg, dataset.path, overwrite=True, progress=False)
        dataset.metadata.update({k: result[k] for k in ("episodes", "frames", "expert_success")})
        with open(summary.path, "w") as f:
            f.write("# prepare-data\n\n```json\n" + json.dumps(result, indent=2, default=str) + "\n```\n")
        return namedtuple("Outputs", ["episodes", "expert_success"])(int(result["episodes"]),
                                                                     float(result["expert_success"]))

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_world_model(params_json: str, profile: str, overrides: list, device: str, dataset: Input[Dataset],
                          world_model: Output[Model], fidelity: Output[Metrics]):
        """Train the action-conditioned video model; log its fidelity against the baselines."""
        import json

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile,
                               overrides=[*overrides, f"common.device={device}"])
        result = stages.train_world_model(cfg, dataset.path, world_model.path, overwrite=True,
                                          checkpoint_dir=world_model.path + ".ckpt", progress=False)
        for name, value in stages.flat_metrics(result["fidelity"]).items():
            if "/mean/" in name or name.startswith("targets/"):  # per-step lists stay in the artifact
                fidelity.log_metric(name, value)

    @dsl.component(base_image=image, install_kfp_package=False)
    def pretrain_policy(params_json: str, profile: str, overrides: list, device: str, dataset: Input[Dataset],
                        policy: Output[Model]):
        """Behaviour-clone the VLA policy on the expert chunks."""
        import json

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile,
                               overrides=[*overrides, f"common.device={device}"])
        result = stages.pretrain_policy(cfg, dataset.path, policy.path, overwrite=True,
                                        checkpoint_dir=policy.path + ".ckpt", progress=False)
        policy.metadata.update({k: v for k, v in result["train"].items() if isinstance(v, (int, float))})

    @dsl.component(base_image=image, install_kfp_package=False)
    def rft(params_json: str, profile: str, overrides: list, device: str, dataset: Input[Dataset],
            world_model: Input[Model], base_policy: Input[Model], policy: Output[Model],
            training: Output[Metrics]):
        """GRPO with verified rewards in the world model."""
        import json

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile,
                               overrides=[*overrides, f"common.device={device}"])
        result = stages.rft(cfg, dataset.path, world_model.path, base_policy.path, policy.path, overwrite=True,
                            checkpoint_dir=policy.path + ".ckpt", progress=False)
        for name, value in stages.flat_metrics({"train": result["train"],
                                                "reward_fidelity": result["reward_fidelity"] or {}}).items():
            training.log_metric(name, value)

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluate(params_json: str, profile: str, overrides: list, device: str, world_model: Input[Model],
                 base_policy: Input[Model], rft_policy: Input[Model], evaluation: Output[Dataset],
                 metrics: Output[Metrics], report: Output[HTML], summary: Output[Markdown]):
        """Base and RFT policies and the scripted expert in the real simulator, on the same episodes."""
        import json
        import shutil
        from pathlib import Path

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile,
                               overrides=[*overrides, f"common.device={device}"])
        result = stages.evaluate(cfg, {"base": base_policy.path, "rft": rft_policy.path}, evaluation.path,
                                 world_model_uri=world_model.path, overwrite=True, progress=False)
        for name, value in stages.kfp_success_metrics(result["metrics"]).items():
            metrics.log_metric(name, value)
        out = Path(evaluation.path)
        shutil.copyfile(out / "summary.md", summary.path)
        # the KFP UI shows one HTML file: inline the GIFs' folder next to it is not served, so link by name
        shutil.copyfile(out / "report.html", report.path)

    @dsl.component(base_image=image, install_kfp_package=False)
    def promote(params_json: str, profile: str, overrides: list, policy: Input[Model], evaluation: Input[Dataset],
                registry: str, decision: Output[Markdown]) -> bool:
        """Champion/challenger: publish the RFT policy to the registry only if it beats the champion."""
        import json

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile, overrides=list(overrides))
        result = stages.promote(cfg, policy.path, evaluation.path, registry=registry or None)
        with open(decision.path, "w") as f:
            f.write("# promote\n\n```json\n" + json.dumps(result, indent=2, default=str) + "\n```\n")
        return bool(result["promoted"])

    return {"prepare-data": prepare_data, "train-world-model": train_world_model,
            "pretrain-policy": pretrain_policy, "rft": rft, "evaluate": evaluate, "promote": promote}
