"""vla-rft: VLA reinforcement fine-tuning with verified rewards in a learned world model (arXiv 2510.00406)."""

__version__ = "0.1.0"
