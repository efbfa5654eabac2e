"""LPIPS(VGG) from a local weights file, for ``rft.perceptual: lpips``.

LPIPS (Zhang et al., 2018) compares unit-normalised VGG16 activations at five depths, weighted per
channel by learned 1x1 convolutions. Its weights cannot be downloaded at run time here, so this
module only loads them from ``rft.lpips_weights``: a ``.safetensors`` file (or a ``.pth`` read with
``torch.load(weights_only=True)``) holding the state dict of the reference implementation's
``lpips.LPIPS(net="vgg")`` module, whose key names this module reproduces (``net.slice1.0.weight``
... ``lin4.model.1.weight``). Make one on a connected machine with::

    import lpips, safetensors.torch as st
    state = lpips.LPIPS(net="vgg").state_dict()  # lists lin0..4 twice; keep one copy
    st.save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("lins.")},
                 "lpips_vgg.safetensors")

Cost: ~1.3 GFLOP per 64x64 frame, so a B=8, G=8, K=8 GRPO step spends seconds in LPIPS on a CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

# VGG16 ``features`` indices of each slice, ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = v
    return layers


class _VGG16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        features = _vgg16_features()
        for i, (lo, hi) in enumerate(_SLICES, start=1):
            block = nn.Sequential()
            for j in range(lo, hi):
                block.add_module(str(j), features[j])
            setattr(self, f"slice{i}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, len(_SLICES) + 1):
            x = getattr(self, f"slice{i}")(x)
            outs.append(x)
        return outs


class _Linear(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS(VGG) distance between images in [0, 1]; ``forward(a, b)`` -> (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = _VGG16()
        for i, c in enumerate(_CHANNELS):
            setattr(self, f"lin{i}", _Linear(c))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = self.scaling_layer
        fa = self.net(((a * 2 - 1) - s.shift) / s.scale)
        fb = self.net(((b * 2 - 1) - s.shift) / s.scale)
        total = torch.zeros(a.shape[0], device=a.device)
        for i, (x, y) in enumerate(zip(fa, fb)):
            x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}").model((x - y).pow(2)).mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=2)
def load_lpips(path: str) -> LPIPS:
    """LPIPS with the weights in ``path``; a clear error when the file is missing or is not LPIPS(VGG)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"rft.lpips_weights: no file at {path} (LPIPS weights cannot be downloaded here; "
                                "see vla_rft/rft/lpips.py for how to make one)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    # the reference module also lists lin0..lin4 as ``lins.0..4``; its scaling constants are optional
    for key in [k for k in state if k.startswith("lins.")]:
        _, index, rest = key.split(".", 2)
        value = state.pop(key)
        state.setdefault(f"lin{index}.{rest}", value)
    model = LPIPS()
    for key, value in model.state_dict().items():
        if key.startswith("scaling_layer."):
            state.setdefault(key, value)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"rft.lpips_weights {path} is not an LPIPS(VGG) state dict: missing {sorted(missing)[:3]}"
                         f"{'...' if len(missing) > 3 else ''}, unexpected {sorted(unexpected)[:3]}"
                         f"{'...' if len(unexpected) > 3 else ''}")
    model.load_state_dict(state)
    return model
