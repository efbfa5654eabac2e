"""The KFP pipeline and its compile/submit/schedule helpers (shipped as vla_rft.pipelines)."""
