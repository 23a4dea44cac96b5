"""Unsupervised fusion loss: structure (SSIM), intensity (MSE to the brighter source) and gradient (Sobel) terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

__all__ = ["FusionLoss", "sobel_magnitude"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of a (N, C, H, W) batch, channel by channel, with replicate padding (same shape out)."""
    n, c, h, w = x.shape
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1).to(device=x.device, dtype=x.dtype)  # (2, 1, 3, 3)
    padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernel)  # (N*C, 2, H, W)
    return grads.abs().sum(dim=1).reshape(n, c, h, w)


class FusionLoss(nn.Module):
    """``w_ssim * L_ssim + w_int * L_int + w_grad * L_grad`` for a fused image F and its sources A, B.

    With F clamped to [0, 1]:

    - ``L_ssim = 0.5 (1 - SSIM(F, A)) + 0.5 (1 - SSIM(F, B))`` (Gaussian window 11, sigma 1.5, data range 1)
    - ``L_int = MSE(F, max(A, B))``
    - ``L_grad = L1(|Sobel F|, max(|Sobel A|, |Sobel B|))`` with ``|Sobel| = |Gx| + |Gy|``

    Used as MONAI ``loss_function(y_pred, y)`` with the label set to the network input itself:
    ``input`` is the fused batch (N, 1, H, W), ``target`` the sources (N, 2, H, W), channel 0 = A, channel 1 = B.
    H and W must be at least the SSIM window (11).
    """

    def __init__(
        self,
        w_ssim: float = 10.0,
        w_int: float = 10.0,
        w_grad: float = 1.0,
        win_size: int = 11,
        kernel_sigma: float = 1.5,
    ) -> None:
        super().__init__()
        self.w_ssim = float(w_ssim)
        self.w_int = float(w_int)
        self.w_grad = float(w_grad)
        self.win_size = int(win_size)
        self.ssim_loss = SSIMLoss(
            spatial_dims=2, data_range=1.0, kernel_type="gaussian", win_size=win_size, kernel_sigma=kernel_sigma
        )

    def _check(self, input: torch.Tensor, target: torch.Tensor) -> None:
        if input.dim() != 4 or input.shape[1] != 1:
            raise ValueError(f"FusionLoss expects the fused image as [N, 1, H, W], got {tuple(input.shape)}")
        if target.dim() != 4 or target.shape[1] != 2:
            raise ValueError(f"FusionLoss expects the sources as [N, 2, H, W], got {tuple(target.shape)}")
        if input.shape[0] != target.shape[0] or input.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"fused {tuple(input.shape)} and sources {tuple(target.shape)} differ in batch size or H, W"
            )
        if min(input.shape[-2:]) < self.win_size:
            raise ValueError(f"H and W must be >= the SSIM window {self.win_size}, got {tuple(input.shape[-2:])}")

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted terms ``ssim``, ``int``, ``grad`` and the weighted ``total`` (all scalars), for logging."""
        self._check(input, target)
        fused = input.clamp(0.0, 1.0)
        target = target.to(fused.dtype)
        a, b = target[:, 0:1], target[:, 1:2]
        l_ssim = 0.5 * self.ssim_loss(fused, a) + 0.5 * self.ssim_loss(fused, b)
        l_int = F.mse_loss(fused, torch.maximum(a, b))
        grad_src = sobel_magnitude(target)
        l_grad = F.l1_loss(sobel_magnitude(fused), torch.maximum(grad_src[:, 0:1], grad_src[:, 1:2]))
        total = self.w_ssim * l_ssim + self.w_int * l_int + self.w_grad * l_grad
        return {"ssim": l_ssim, "int": l_int, "grad": l_grad, "total": total}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """fused (N, 1, H, W), sources (N, 2, H, W) -> scalar loss."""
        return self.components(input, target)["total"]
