"""The world model, an action-conditioned video predictor that serves as the learned simulator.

``configuration`` (WorldModelConfig), ``modeling`` (WorldModel: K frames from one context frame and K
actions, chained by ``rollout``; ImaginedSimulator behind the real simulator's batched interface),
``train`` (fit to the offline dataset), ``evaluate`` (val chunks against copy-last-frame and
shuffled-action baselines). Import from the submodules.
"""
