"""The world model: an action-conditioned video predictor that serves as VLA-RFT's learned simulator.

VLA-RFT (arXiv 2510.00406) rolls a policy out inside a world model trained on offline data: from
one context frame and a chunk of K actions it predicts the next K frames. The paper uses
iVideoGPT (a VQ tokenizer + an autoregressive LLaMA); on a 2-core CPU we keep its interface
(1 context frame + K actions -> K frames, chained chunk by chunk) with a model that learns in
minutes and keeps 1-3 px objects (gripper fingers, puck, goal marker):

* a conv encoder reads the context frame at full resolution and at every halving down to 1/8
  (U-Net skip connections into the decoder, so 1-3 px objects never pass through the tokens);
* the coarsest map becomes a grid of tokens, mixed with one token per action and one for the
  proprio state by a bidirectional ``transformers.BertModel`` fed ``inputs_embeds``;
* for each future frame a conv decoder (FiLM-conditioned on state, action, cumulative action and
  step) predicts a flow field that warps the context frame plus an RGB residual. Both start at
  zero, so an untrained model is exactly copy-last-frame and training only has to learn what moves;
* a state head predicts the proprio state after every action, so rollouts can chain chunks.

Use ``WorldModel.rollout(start_frames, actions)`` for imagination, ``ImaginedSimulator`` where the
real simulator's batched interface is expected, ``save_pretrained`` / ``from_pretrained``
(safetensors + config.json, never pickle) to store it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from vla_rft.world_model.configuration import ARCHITECTURE_FIELDS, WorldModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "vla_rft_world_model"
CPU_MICRO_BATCH = 16  #: rollout batch on CPU: larger batches fall out of cache and run slower per env-step


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """Pre-norm residual conv block of the context encoder."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


@dataclass
class WorldModelOutput:
    """What one forward pass predicts for a batch of chunks."""

    frames: torch.Tensor  #: (B, F, 3, H, W) float, unclamped: the decoded future frames
    frame_index: torch.Tensor  #: (B, F) long: which of the K future frames ``frames`` holds (0 = t+1)
    states: torch.Tensor  #: (B, K, S) predicted proprio state after each action, real units
    states_norm: torch.Tensor  #: (B, K, S) the same, normalised (what the state loss compares)
    state_estimate_norm: torch.Tensor  #: (B, S) state read from the context frame, normalised


class WorldModel(nn.Module):
    """1 context frame (+ proprio state) and K actions -> the next K frames, batched."""

    def __init__(self, config: WorldModelConfig, image_size: int = 64, chunk_len: int = 8,
                 action_dim: int = 4, state_dim: int = 4, env_state_dim: int = 0):
        super().__init__()
        if bool(env_state_dim) != config.environment_state or not 0 <= env_state_dim < state_dim:
            raise ValueError(f"world_model.environment_state={config.environment_state} needs env_state_dim > 0 "
                             f"(and < state_dim {state_dim}) exactly when set, got {env_state_dim}")
        levels = len(config.channels)
        coarse = image_size // 2 ** (levels - 1)
        if image_size % 2 ** (levels - 1) or coarse % config.patch_size:
            raise ValueError(
                f"image_size {image_size} with {levels} encoder levels (world_model.channels) gives a "
                f"{image_size / 2 ** (levels - 1):g} px map that world_model.patch_size={config.patch_size} "
                "does not divide; use fewer channels entries or a smaller patch_size"
            )
        self.config = config
        self.image_size, self.chunk_len = image_size, chunk_len
        self.action_dim, self.state_dim = action_dim, state_dim
        #: the last ``env_state_dim`` state entries are the scene's (objects, goal), the first
        #: ``proprio_dim`` the robot's: only those are a policy's input
        self.env_state_dim, self.proprio_dim = env_state_dim, state_dim - env_state_dim
        self.grid = coarse // config.patch_size
        ch, d, c = config.channels, config.hidden_size, config.cond_size
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

        # context encoder: full resolution first, one stride-2 conv per further level
        self.stem = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            [nn.Identity()] + [nn.Conv2d(ch[i - 1], ch[i], 3, stride=2, padding=1) for i in range(1, levels)]
        )
        self.enc = nn.ModuleList([ResBlock(ch[i], ch[i]) for i in range(levels)])
        self.to_tokens = nn.Conv2d(ch[-1], d, config.patch_size, stride=config.patch_size)

        # conditioning: per-step features = [state, action_k, cumulative action, one-hot k]
        feat = (state_dim if config.use_state else 0) + 2 * action_dim + chunk_len
        self.action_tokens = nn.Linear(feat, d)
        self.state_token = nn.Linear(state_dim, d) if config.use_state else None
        self.frame_cond = nn.Sequential(nn.Linear(feat, c), nn.SiLU(), nn.Linear(c, c))
        n_tokens = (1 if config.use_state else 0) + chunk_len + self.grid ** 2
        self.transformer = BertModel(BertConfig(
            vocab_size=1, hidden_size=d, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.mlp_ratio * d,
            hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
            max_position_embeddings=n_tokens, type_vocab_size=1, hidden_act="gelu",
        ), add_pooling_layer=False)
        self.state_estimate = nn.Linear(d, state_dim)  # state read from the context frame alone
        self.state_head = nn.Linear(d, state_dim)  # state after each action, from the action tokens

        # per-frame decoder: transformer grid -> coarsest map, then up through the skips
        fc = config.frame_channels
        self.to_frames = nn.Linear(d, chunk_len * fc)
        self.action_to_frame = nn.Linear(d, fc)
        p = config.patch_size
        self.from_tokens = nn.ConvTranspose2d(fc, ch[-1], p, stride=p) if p > 1 else nn.Conv2d(fc, ch[-1], 1)
        # decoder level i: conv(x) per frame + conv(skip_i) once per chunk (= a conv over their
        # concatenation, at half the per-frame cost), then GroupNorm + FiLM + SiLU and a stride-2
        # transposed conv up to the next level. The per-frame conv is left out where it buys little
        # for its cost: at the coarsest level (the transformer already mixed space there) and at
        # full resolution (the 3x3 head follows; warping carries the fine detail)
        self.dec_x = nn.ModuleList([
            nn.Conv2d(ch[i], ch[i], 3, padding=1) if 0 < i < levels - 1 else nn.Identity() for i in range(levels)
        ])
        self.dec_skip = nn.ModuleList([nn.Conv2d(ch[i], ch[i], 3, padding=1, bias=False) for i in range(levels)])
        self.dec_norm = nn.ModuleList([nn.Identity()] + [nn.GroupNorm(_groups(ch[i]), ch[i]) for i in range(1, levels)])
        self.dec_film = nn.ModuleList([nn.Identity()] + [nn.Linear(c, 2 * ch[i]) for i in range(1, levels)])
        self.up = nn.ModuleList([nn.Identity()] + [nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2)
                                                   for i in range(1, levels)])
        for film in self.dec_film[1:]:
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.head = nn.Conv2d(ch[0], 5, 3, padding=1)  # flow (2, pixels) + RGB residual (3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        # align_corners=False pixel centres
        scale = (image_size - 1) / image_size
        self.register_buffer("base_grid", torch.stack([xs, ys], -1)[None] * scale, persistent=False)

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.stem.weight.device

    def set_state_normalization(self, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray) -> None:
        """Store the dataset's state statistics (saved with the weights)."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def model_states(self, states, env_states=None) -> torch.Tensor:
        """The state this model takes (N, state_dim): the proprio states (N, proprio_dim), followed
        by the environment states (N, env_state_dim) for a model that predicts them."""
        states = torch.as_tensor(states, dtype=torch.float32)
        if states.shape[-1] != self.proprio_dim:
            raise ValueError(f"states have {states.shape[-1]} entries, this world model's proprio state has {self.proprio_dim}")
        if not self.env_state_dim:
            return states
        if env_states is None:
            raise ValueError("this world model predicts the environment state (world_model.environment_state): its "
                             "start states need observation.environment_state, which the data does not record")
        env_states = torch.as_tensor(env_states, dtype=torch.float32)
        if env_states.shape[-1] != self.env_state_dim:
            raise ValueError(f"environment states have {env_states.shape[-1]} entries, this world model's have "
                             f"{self.env_state_dim}")
        return torch.cat([states, env_states], -1)

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()

    def _warp(self, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sample ``image`` (N, 3, H, W) at pixel + flow (N, 2, H, W), flow in pixels (x, y)."""
        grid = self.base_grid + flow.permute(0, 2, 3, 1) * (2.0 / self.image_size)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, actions: torch.Tensor, states: torch.Tensor | None = None,
                frame_index: torch.Tensor | None = None) -> WorldModelOutput:
        """Predict future frames for a batch of chunks.

        ``images`` (B, 3, H, W) uint8 or float in [0, 1] (frame t), ``actions`` (B, K, A) (actions
        t..t+K-1), ``states`` (B, S) or None (then the state is estimated from the frame),
        ``frame_index`` (B, F) long: which future frames to decode (default: all K; training decodes
        a random few because the decoder dominates the cost).
        """
        ctx = self._to_float(images)
        actions = actions.to(self.device, torch.float32)
        b, k = actions.shape[:2]
        if k != self.chunk_len:
            raise ValueError(f"actions have {k} steps, this world model predicts chunks of {self.chunk_len}")
        if actions.shape[2] != self.action_dim:
            raise ValueError(f"actions have {actions.shape[2]} dims, this world model takes {self.action_dim}")
        if frame_index is None:
            frame_index = torch.arange(k, device=self.device).expand(b, k)
        frame_index = frame_index.to(self.device)
        n_dec = frame_index.shape[1]

        skips, x = [], self.stem(ctx * 2 - 1)
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        tokens = self.to_tokens(x).flatten(2).transpose(1, 2)  # (B, G*G, d)
        estimate = self.state_estimate(tokens.mean(1))
        if states is None:
            state_norm = estimate.detach()
        else:
            state_norm = (states.to(self.device, torch.float32) - self.state_mean) / self.state_std

        onehot = torch.eye(k, device=self.device).expand(b, k, k)
        parts = [actions, actions.cumsum(1) / 4.0, onehot]
        if self.config.use_state:
            parts.insert(0, state_norm[:, None].expand(b, k, self.state_dim))
        feats = torch.cat(parts, -1)  # (B, K, feat)
        seq = [self.action_tokens(feats), tokens]
        if self.state_token is not None:
            seq.insert(0, self.state_token(state_norm)[:, None])
        hidden = self.transformer(inputs_embeds=torch.cat(seq, 1)).last_hidden_state
        n_pre = 1 if self.state_token is not None else 0
        act_out, grid_out = hidden[:, n_pre:n_pre + k], hidden[:, n_pre + k:]
        states_norm = state_norm[:, None] + self.state_head(act_out)

        # decode the selected frames
        g, fc = self.grid, self.config.frame_channels
        per_frame = self.to_frames(grid_out).view(b, g * g, k, fc)
        gather = frame_index[:, None, :, None].expand(b, g * g, n_dec, fc)
        lat = per_frame.gather(2, gather).permute(0, 2, 3, 1).reshape(b, n_dec, fc, g, g)
        act_sel = act_out.gather(1, frame_index[..., None].expand(b, n_dec, act_out.shape[-1]))
        lat = lat + self.action_to_frame(act_sel)[..., None, None]
        cond = self.frame_cond(feats.gather(1, frame_index[..., None].expand(b, n_dec, feats.shape[-1])))
        cond = cond.reshape(b * n_dec, -1)

        x = self.from_tokens(lat.reshape(b * n_dec, fc, g, g))
        for i in reversed(range(len(self.dec_x))):
            h = self.dec_x[i](x)
            h = (h.view(b, n_dec, *h.shape[1:]) + self.dec_skip[i](skips[i])[:, None]).flatten(0, 1)
            if i > 0:
                scale, shift = self.dec_film[i](cond)[:, :, None, None].chunk(2, dim=1)
                x = self.up[i](F.silu(self.dec_norm[i](h) * (1 + scale) + shift))
            else:
                x = F.silu(h)
        out = self.head(x)
        flow = self.config.max_flow * torch.tanh(out[:, :2])
        frames = self._warp(ctx[:, None].expand(b, n_dec, *ctx.shape[1:]).flatten(0, 1), flow) + out[:, 2:]
        frames = frames.view(b, n_dec, 3, self.image_size, self.image_size)
        return WorldModelOutput(frames, frame_index, states_norm * self.state_std + self.state_mean,
                                states_norm, estimate)

    @torch.no_grad()
    def rollout(self, start_frames: torch.Tensor, actions: torch.Tensor, states: torch.Tensor | None = None,
                return_states: bool = False, micro_batch: int | None = None):
        """Imagine ``n * K`` frames from a start frame and ``n`` chained action chunks.

        ``start_frames`` (B, 3, H, W) uint8 or float in [0, 1]; ``actions`` (B, n*K, A); ``states``
        (B, S) or None. The last predicted frame (rounded to 8 bits, like a rendered frame) and the
        predicted state become the next chunk's context. Deterministic. Returns frames
        (B, n*K, 3, H, W) float in [0, 1] (and the predicted states (B, n*K, S) if ``return_states``).
        ``micro_batch`` chunks the batch (default: 16 on CPU, where small batches stay in cache and
        run faster per env-step; everything at once on GPU); the result is the same up to float rounding.
        """
        actions = torch.as_tensor(actions)
        total = actions.shape[1]
        if total == 0 or total % self.chunk_len:
            raise ValueError(f"rollout needs a multiple of chunk_len={self.chunk_len} actions, got {total}")
        start_frames = torch.as_tensor(start_frames)
        n = len(start_frames)
        step = micro_batch or (CPU_MICRO_BATCH if self.device.type == "cpu" else n)
        frames, state_seq = [], []
        for lo in range(0, n, step):
            ctx = self._to_float(start_frames[lo:lo + step])
            state = None if states is None else torch.as_tensor(states[lo:lo + step]).to(self.device, torch.float32)
            for start in range(0, total, self.chunk_len):
                out = self(ctx, actions[lo:lo + step, start:start + self.chunk_len], state)
                chunk = out.frames.clamp(0, 1)
                frames.append(chunk)
                state_seq.append(out.states)
                ctx = torch.round(chunk[:, -1] * 255) / 255
                state = out.states[:, -1]
        chunks_per_row = total // self.chunk_len
        frames_t = torch.cat([torch.cat(frames[i:i + chunks_per_row], 1) for i in range(0, len(frames), chunks_per_row)])
        if not return_states:
            return frames_t
        states_t = torch.cat([torch.cat(state_seq[i:i + chunks_per_row], 1)
                              for i in range(0, len(state_seq), chunks_per_row)])
        return frames_t, states_t

    # -- persistence ------------------------------------------------------------------------------
    def model_config(self) -> dict:
        return {
            "model_type": MODEL_TYPE, "image_size": self.image_size, "chunk_len": self.chunk_len,
            "action_dim": self.action_dim, "state_dim": self.state_dim, "env_state_dim": self.env_state_dim,
            "architecture": self.config.architecture(),
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` (the network's config) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(self.model_config(), indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "WorldModel":
        """Load a model written by :meth:`save_pretrained` (safetensors only)."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory} is not a saved world model: {name} is missing")
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{directory / CONFIG_NAME}: model_type {meta.get('model_type')!r}, expected {MODEL_TYPE!r}")
        arch = {k: v for k, v in meta["architecture"].items() if k in ARCHITECTURE_FIELDS}
        model = cls(WorldModelConfig(**arch), meta["image_size"], meta["chunk_len"], meta["action_dim"],
                    meta["state_dim"], meta.get("env_state_dim", 0))  # saved before the field: none
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except Exception as err:  # safetensors raises its own error type for a truncated or corrupt file
            raise ValueError(f"{directory / WEIGHTS_NAME} is not a readable safetensors file "
                             f"({' '.join(str(err).split())})") from None
        model.load_state_dict(state)
        return model.to(device).eval()


@dataclass
class ImaginedObservation:
    """Mirrors the real simulator's ``Observation``."""

    frames: np.ndarray  #: (B, H, W, 3) uint8
    states: np.ndarray  #: (B, S) float32


@dataclass
class ImaginedStep:
    """Mirrors the real simulator's ``ChunkStep``; the world model predicts no reward or success."""

    frames: np.ndarray  #: (B, K, H, W, 3) uint8, or (B, 1, H, W, 3) with render="last"
    states: np.ndarray  #: (B, S) predicted state after the chunk
    rewards: np.ndarray  #: (B, K) zeros: rewards are computed from the frames by the caller
    success: np.ndarray  #: (B,) False
    steps: np.ndarray  #: (B,) K


class ImaginedSimulator:
    """The world model behind the real simulator's batched interface: ``reset`` then ``step_chunk``."""

    def __init__(self, model: WorldModel, batch_size: int | None = None):
        self.model = model.eval()
        self.batch_size = batch_size
        self._frames: torch.Tensor | None = None
        self._states: torch.Tensor | None = None

    def reset(self, frames: np.ndarray, states: np.ndarray | None = None) -> ImaginedObservation:
        """Start from real frames (B, H, W, 3) uint8 and proprio states (B, S) (None: estimated)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"reset expects frames (B, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        self._frames = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        self._states = None if states is None else torch.as_tensor(np.asarray(states, np.float32))
        shown = np.zeros((len(frames), self.model.state_dim), np.float32) if states is None else np.asarray(states, np.float32)
        return ImaginedObservation(frames, shown)

    def step_chunk(self, actions: np.ndarray, render: str = "all") -> ImaginedStep:
        """Imagine one chunk (B, K, A) from the current frames; the last frame becomes the next start."""
        if self._frames is None:
            raise RuntimeError("call reset(frames, states) before step_chunk")
        if render not in ("last", "all"):
            raise ValueError(f"render must be 'last' or 'all', got {render!r}")
        actions = torch.as_tensor(np.asarray(actions, np.float32))
        n = len(actions)
        if n != len(self._frames):
            raise ValueError(f"step_chunk got {n} action chunks for {len(self._frames)} envs")
        frames, states = self.model.rollout(self._frames, actions, self._states, return_states=True,
                                            micro_batch=self.batch_size)
        pred = torch.round(frames * 255).to(torch.uint8).cpu()
        state_seq = states.cpu()
        self._frames = pred[:, -1].contiguous()
        self._states = state_seq[:, -1]
        out = pred.permute(0, 1, 3, 4, 2).numpy()
        k = out.shape[1]
        return ImaginedStep(
            frames=out if render == "all" else out[:, -1:],
            states=self._states.numpy().astype(np.float32),
            rewards=np.zeros((n, k), np.float32), success=np.zeros(n, bool), steps=np.full(n, k, np.int64),
        )
