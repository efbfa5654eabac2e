"""RFT: verified rewards and the GRPO trainer."""
