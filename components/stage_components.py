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
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "ghcr.io/vla-rft/vla-rft:0.1.0"


def build_components(image: str = DEFAULT_IMAGE) -> dict:
    """The stage components for ``image``, by stage name."""

    @dsl.component(base_image=image, install_kfp_package=False)
    def prepare_data(params_json: str, profile: str, overrides: list, dataset: Output[Dataset],
                     summary: Output[Markdown]) -> NamedTuple("Outputs", [("episodes", int), ("expert_success", float)]):
        """Record scripted-expert episodes in Meta-World as a Parquet dataset."""
        import json
        from collections import namedtuple

        from vla_rft import stages
        from vla_rft.config import config_from_dict

        cfg = config_from_dict(json.loads(params_json), profile=profile, overrides=list(overrides))
        result = stages.prepare_data(cfg, dataset.path, overwrite=True, progress=False)
        dataset.metadata.update({k: result[k] for k in ("episodes", "frames", "expert_success")})
        with open(summary.path, "w") as f:
            f.write("# prepare-data\n\n```json\n" + json.dumps(result, indent=2, default=str) + "\n```\n")
        out = namedtuple("Outputs", ["episodes", "expert_success"])
        return out(int(result["episodes"]), float(result["expert_success"]))

    return {"prepare-data": prepare_data}
