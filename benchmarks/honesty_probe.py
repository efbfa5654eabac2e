"""Is the imagined outcome still honest for a fine-tuned policy? The honesty check for any policy.

``rft.mode: episode`` writes ``honesty.json`` for the *base* policy before training. A policy that
RFT has fine-tuned inside the world model may have learnt actions whose imagined outcome differs
from the real one (it optimises what the world model and the judge reward). This runs the same
check (``vla_rft.rft.honesty.honesty_check_from_config``: real episodes on held-out training-range seeds
against closed-loop imagination from the same layouts) for each ``--policy``, and prints and
writes the numbers side by side:

    python benchmarks/honesty_probe.py --world-model WMG --success-model J \\
        --policy base=BC --policy episode=RFT --out runs/honesty_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_rft import storage  # noqa: E402
from vla_rft.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--world-model", required=True)
    ap.add_argument("--success-model", required=True)
    ap.add_argument("--policy", action="append", required=True, metavar="NAME=URI")
    ap.add_argument("--out", required=True, help="JSON file for the per-policy honesty numbers")
    args = ap.parse_args()
    policies = dict(p.split("=", 1) for p in args.policy)

    from vla_rft.policy.modeling import VLAPolicy
    from vla_rft.rft.honesty import honesty_check_from_config, success_threshold
    from vla_rft.success.modeling import SuccessModel
    from vla_rft.world_model.modeling import WorldModel

    cfg = load_config(args.params, args.profile, args.overrides)
    wm_dir, _ = storage.read_artifact(args.world_model, expected_kind="world_model")
    judge_dir, _ = storage.read_artifact(args.success_model, expected_kind="success_model")
    world_model = WorldModel.from_pretrained(wm_dir, device=cfg.common.device)
    judge = SuccessModel.from_pretrained(judge_dir, device=cfg.common.device)
    threshold = success_threshold(cfg, judge)
    out = {"world_model": args.world_model, "success_model": args.success_model, "threshold": threshold,
           "policies": {}}
    for name, uri in policies.items():
        policy_dir, _ = storage.read_artifact(uri, expected_kind="policy")
        policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device).eval()
        h = honesty_check_from_config(cfg, policy, world_model, judge, threshold, list(cfg.sim.tasks))
        out["policies"][name] = {"uri": uri, **h}
        corr = h["correlation_across_tasks"]
        auc = h["imagined_auc"]
        print(f"{name}: imagined {h['imagined_success']:.0%} vs real {h['real_success']:.0%}, correlation "
              f"{'n/a' if corr is None else format(corr, '.2f')}, hallucination "
              f"{'n/a' if h['hallucination_rate'] is None else format(h['hallucination_rate'], '.0%')} of real "
              f"failures, imagined AUC {'n/a' if auc is None else format(auc, '.3f')}")
        for task, v in h["per_task"].items():
            print(f"  {task:>22}: imagined {v['imagined_success']:.0%}, real {v['real_success']:.0%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
