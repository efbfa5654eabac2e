"""How well a world model with ``world_model.environment_state`` predicts where things are, and how well a
state judge (``success_model.input=state``) reads its predictions, on recorded val episodes.

Every val episode (expert data and policy rollouts) is replayed in the world model from its reset frame and
state with its recorded actions, for up to ``--horizon`` chunks (closed loop on frames and predicted state,
open loop on actions: the real outcome of the same actions is known). After each chunk the predicted state is
compared with the recorded one (hand and first object position error, cm) and judged; the judge's AUC against
the simulator's success flag is given on the real states and on the imagined ones, per task:

    .venv/bin/python benchmarks/state_fidelity.py --dataset runs/cs/dataset --dataset runs/cs/rollouts \\
        --world-model runs/cs/world_model_grounded --success-model runs/cs/success_model_state \\
        --out benchmarks/results/state_fidelity_mt10.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_rft import storage  # noqa: E402
from vla_rft.data import concat_datasets, load_dataset  # noqa: E402
from vla_rft.success.modeling import SuccessModel  # noqa: E402
from vla_rft.success.train import roc_auc  # noqa: E402
from vla_rft.tasks import STATE_DIM  # noqa: E402
from vla_rft.world_model.imagine import imagine_episodes  # noqa: E402
from vla_rft.world_model.modeling import WorldModel  # noqa: E402


def replay(world_model, data, horizon: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Per (val episode, chunk): task, real success label, real and imagined state after the chunk."""
    k = world_model.chunk_len
    eps = [e for e in data.episodes_in("val") if e["length"] > k]  # a real state after the first chunk
    out: dict[str, list] = {n: [] for n in ("task", "label", "real", "imagined", "chunk", "source")}
    images_all = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
    for lo in range(0, len(eps), batch):
        group = eps[lo:lo + batch]
        starts = np.array([e["dataset_from_index"] for e in group])
        ends = np.array([e["dataset_to_index"] for e in group])
        chunks = np.minimum((ends - starts - 1) // k, horizon)  # whole chunks with a recorded state after them
        h = int(chunks.max())
        idx = np.minimum(starts[:, None] + np.arange(h * k)[None], ends[:, None] - 1)
        actions = torch.from_numpy(data.actions[idx]).reshape(len(group), h, k, -1)
        ep = imagine_episodes(world_model, lambda _i, _s, _t, c: actions[:, c], images_all[starts],
                              world_model.model_states(data.states[starts], data.env_states[starts]),
                              torch.from_numpy(data.task_index[starts]), h)
        for j, e in enumerate(group):
            for c in range(int(chunks[j])):
                row = starts[j] + (c + 1) * k  # the state shown after the chunk's last action
                out["task"].append(int(e["task_index"]))
                out["label"].append(bool(data.successes[row - 1]))
                out["real"].append(np.concatenate([data.states[row], data.env_states[row]]))
                out["imagined"].append(ep.states[j, c].numpy())
                out["chunk"].append(c)
                out["source"].append(e.get("source", "expert"))
    return {n: np.asarray(v) for n, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", required=True)
    ap.add_argument("--world-model", required=True)
    ap.add_argument("--success-model", required=True)
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    data = concat_datasets([load_dataset(storage.read_artifact(u, expected_kind="dataset")[0]) for u in args.dataset])
    wm = WorldModel.from_pretrained(storage.read_artifact(args.world_model, expected_kind="world_model")[0])
    judge = SuccessModel.from_pretrained(storage.read_artifact(args.success_model, expected_kind="success_model")[0])
    if not wm.env_state_dim or judge.config.input != "state":
        raise SystemExit("needs a world model with world_model.environment_state and a success_model.input=state judge")
    r = replay(wm, data, args.horizon)
    tasks = torch.as_tensor(judge.task_order(data.tasks))[torch.from_numpy(r["task"])]
    p_real = judge.probability(torch.from_numpy(r["real"]).float(), tasks).numpy()
    p_imag = judge.probability(torch.from_numpy(r["imagined"]).float(), tasks).numpy()
    hand = np.linalg.norm(r["real"][:, :3] - r["imagined"][:, :3], axis=1) * 100
    obj = np.linalg.norm(r["real"][:, STATE_DIM:STATE_DIM + 3] - r["imagined"][:, STATE_DIM:STATE_DIM + 3], axis=1) * 100
    rows, table = [], {}
    for t, name in enumerate(data.tasks):
        s = r["task"] == t
        last = s & (r["chunk"] == r["chunk"][s].max())
        table[name] = {
            "chunks": int(s.sum()), "positive": int(r["label"][s].sum()),
            "hand_error_cm": float(np.median(hand[s])), "object_error_cm": float(np.median(obj[s])),
            "object_error_cm_last_chunk": float(np.median(obj[last])),
            "auc_real_state": roc_auc(p_real[s], r["label"][s]), "auc_imagined_state": roc_auc(p_imag[s], r["label"][s]),
        }
        v = table[name]
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        rows.append(f"| {name} | {v['chunks']} ({v['positive']}) | {v['hand_error_cm']:.1f} | {v['object_error_cm']:.1f} | "
                    f"{v['object_error_cm_last_chunk']:.1f} | {fmt(v['auc_real_state'])} | {fmt(v['auc_imagined_state'])} |")
    overall = {"auc_real_state": roc_auc(p_real, r["label"]), "auc_imagined_state": roc_auc(p_imag, r["label"]),
               "hand_error_cm": float(np.median(hand)), "object_error_cm": float(np.median(obj))}
    cmd = "python benchmarks/state_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = [f"# State fidelity of an environment-state world model\n", f"`{cmd}`\n",
          f"Val episodes replayed from their reset with their recorded actions, {args.horizon} chunks at most; "
          "errors are medians over chunks; AUC of the state judge against the simulator's success flag.\n",
          "| task | chunks (successes) | hand error, cm | object error, cm | object error at the last chunk, cm "
          "| AUC on real states | AUC on imagined states |", "|---|---|---|---|---|---|---|", *rows,
          f"\nAll tasks: AUC real {overall['auc_real_state']:.3f}, imagined {overall['auc_imagined_state']:.3f}; "
          f"median hand error {overall['hand_error_cm']:.1f} cm, object error {overall['object_error_cm']:.1f} cm.\n"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    Path(args.out).with_suffix(".json").write_text(json.dumps({"command": cmd, "per_task": table, "all": overall},
                                                              indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
