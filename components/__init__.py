"""KFP components: thin wrappers around vla_rft.stages (shipped as vla_rft.components)."""
