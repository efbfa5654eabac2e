"""The VLA policy: ``configuration`` (PolicyConfig), ``modeling`` (VLAPolicy, the Gaussian chunk head),
``text`` (the frozen sentence encoder), ``train`` (behaviour cloning). Import from the submodules."""
