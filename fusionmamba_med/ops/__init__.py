"""Low-level operators."""

from fusionmamba_med.ops.scan import (
    BACKENDS,
    available_backends,
    mamba_ssm_available,
    resolve_backend,
    selective_scan,
)

__all__ = ["selective_scan", "resolve_backend", "available_backends", "mamba_ssm_available", "BACKENDS"]
