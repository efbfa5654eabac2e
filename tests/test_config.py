from pathlib import Path

import pytest

from vla_rft.config import ConfigError, config_from_dict, load_config
from vla_rft.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_load_and_differ():
    quick = load_config("params.yaml", profile="quick")
    standard = load_config("params.yaml", profile="standard")
    assert quick.profile == "quick" and standard.profile == "standard"
    assert standard.prepare_data.episodes_per_task >= 50
    assert len(standard.sim.tasks) >= 6
    assert quick.prepare_data.episodes_per_task < standard.prepare_data.episodes_per_task


def test_override_applies_and_is_typed():
    cfg = load_config("params.yaml", profile="quick", overrides=["sim.image_size=96", "common.device=cuda"])
    assert cfg.sim.image_size == 96 and cfg.common.device == "cuda"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sim": {"image_sizee": 64}}, "unknown key 'sim.image_sizee'"),
        ({"sim": {"image_size": "big"}}, "sim.image_size must be an integer"),
        ({"sim": {"tasks": ["push", "fly-to-moon"]}}, "unknown task 'fly-to-moon'"),
        ({"simulator": {}}, "unknown section 'simulator'"),
        ({"prepare_data": {"keep_failed": "yes"}}, "prepare_data.keep_failed must be true or false"),
        ({"common": {"chunk_len": 0}}, "common.chunk_len must be >= 1"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(raw)


def test_unknown_task_error_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sim": {"tasks": ["nope"]}})
    for name in TASKS:
        assert name in str(err.value)


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_config("params.yaml", profile="huge")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_params_yaml_sections_match_the_dataclass_defaults():
    """params.yaml's sections are the defaults; code that builds a config without the file must agree."""
    import dataclasses

    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = load_config(ROOT / "params.yaml")
    differ = []
    for section in ("common", "sim", "prepare_data", "world_model", "policy", "rft", "collect_rollouts",
                    "success_model", "evaluate", "promote"):
        for field in dataclasses.fields(type(getattr(cfg, section))):
            if field.name not in raw[section]:
                continue
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            default = list(default) if isinstance(default, tuple) else default
            if raw[section][field.name] != default:
                differ.append(f"{section}.{field.name}: params.yaml {raw[section][field.name]!r}, code {default!r}")
    assert not differ, differ


def test_every_profile_names_every_section():
    """dvc.yaml tracks `profiles.${profile}.<section>`; dvc refuses to run when such a key is missing."""
    import yaml

    from vla_rft.config import SECTIONS

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, profile in raw["profiles"].items():
        assert sorted(profile) == sorted(SECTIONS), f"profile {name!r} names {sorted(profile)}"


@pytest.mark.parametrize("url, refused", [
    ("https://oauth2:glpat-secret@git.example.com/team/data.git", True),
    ("https://ghp_token@github.com/team/data.git", True),
    ("ssh://git:secret@git.example.com/team/data.git", True),
    ("ssh://git@git.example.com/team/data.git", False),  # a user name is not a secret
    ("git@github.com:team/data.git", False),
    ("https://git.example.com/team/data.git", False),
    ("/srv/data-repo", False),
])
def test_a_dvc_repo_url_with_credentials_is_refused(url, refused):
    """data.dvc_repo reaches params, manifests, the compiled pipeline and logs: a token in it is refused."""
    overrides = [f"data.dvc_repo={url}"]
    if refused:
        with pytest.raises(ConfigError, match="data.dvc_repo carries credentials"):
            load_config("params.yaml", "quick", overrides)
    else:
        assert load_config("params.yaml", "quick", overrides).data.dvc_repo == url
