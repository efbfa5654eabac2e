"""The learned success judge: a small conv model over a frame + the task, the reward of episode-mode RFT."""
