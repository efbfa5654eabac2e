"""The real simulator: Meta-World v3 envs, scripted experts, perturbations, a batched interface."""

from vla_rft.sim.perturbations import NOMINAL, EpisodeSpec, Layout, Perturbation, applies, episode_layout

__all__ = ["NOMINAL", "EpisodeSpec", "Layout", "Perturbation", "applies", "episode_layout"]
