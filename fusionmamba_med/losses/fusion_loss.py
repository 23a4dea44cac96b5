"""Unsupervised fusion loss: structure (SSIM or MS-SSIM), intensity (MSE or L1 to a per-pixel target such as the
brighter source), gradient (Sobel) and edge-preservation (Qabf) terms, each form and weight configurable for
ablations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

from fusionmamba_med.metrics.edge_preservation import SOBEL_KERNELS, qabf_batch

__all__ = ["FusionLoss", "sobel_magnitude", "INTENSITY_FORMS", "INTENSITY_TARGETS", "STRUCTURE_FORMS"]

INTENSITY_FORMS = ("mse", "l1")
INTENSITY_TARGETS = ("max", "mean")
STRUCTURE_FORMS = ("ssim", "ms_ssim")
#: the first weights of MS-SSIM's five scales (Wang et al. 2003); ``ms_ssim_scales`` of them are used, renormalised.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of a (N, C, H, W) batch, channel by channel, with replicate padding (same shape out); the
    Sobel kernels are Qabf's (:data:`~fusionmamba_med.metrics.edge_preservation.SOBEL_KERNELS`), the magnitude and
    padding are the loss's own."""
    n, c, h, w = x.shape
    kernel = SOBEL_KERNELS.unsqueeze(1).to(device=x.device, dtype=x.dtype)  # (2, 1, 3, 3)
    padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernel)  # (N*C, 2, H, W)
    return grads.abs().sum(dim=1).reshape(n, c, h, w)


class FusionLoss(nn.Module):
    """``w_ssim * L_ssim + w_int * L_int + w_grad * L_grad + w_qabf * L_qabf`` for a fused image F and its sources A, B.

    With F clamped to [0, 1]:

    - ``L_ssim = 0.5 (1 - S(F, A)) + 0.5 (1 - S(F, B))``, S = SSIM (``structure="ssim"``, Gaussian window 11,
      sigma 1.5, data range 1) or MS-SSIM over ``ms_ssim_scales`` scales (``"ms_ssim"``, as the paper's code uses;
      the crop must exceed ``(win_size - 1) * 2 ** (ms_ssim_scales - 1)`` pixels)
    - ``L_int = MSE(F, T)`` (``intensity="mse"``) or ``L1(F, T)`` (``"l1"``), with the target T = ``max(A, B)``
      (``intensity_target="max"``) or ``(A + B) / 2`` (``"mean"``)
    - ``L_grad = L1(|Sobel F|, max(|Sobel A|, |Sobel B|))`` with ``|Sobel| = |Gx| + |Gy|``
    - ``L_qabf = 1 - Q^{AB/F}``, the batch mean of the Xydeas-Petrovic edge preservation (the ``Qabf`` metric's own
      code, :func:`~fusionmamba_med.metrics.edge_preservation.qabf_batch`): the share of each source's Sobel edges,
      weighted by their strength, that F keeps in strength and orientation. Off by default (``w_qabf = 0``).

    ``structure_margin`` (off by default) turns the structure term into a floor: ``relu(L_ssim - L_ssim(M) - margin)``
    with M the mean of the sources on the same batch, i.e. SSIM is penalised only where it falls more than ``margin``
    below averaging's. With a weighted sum, training trades SSIM for Qabf freely (on IR-VIS it slid towards the max
    rule's low SSIM); with the floor the edge term maximises Qabf at a chosen structural similarity instead.

    Used as MONAI ``loss_function(y_pred, y)`` with the label set to the network input itself:
    ``input`` is the fused batch (N, 1, H, W), ``target`` the sources (N, 2, H, W), channel 0 = A, channel 1 = B.
    H and W must be at least the SSIM window (11).
    """

    def __init__(
        self,
        w_ssim: float = 10.0,
        w_int: float = 10.0,
        w_grad: float = 1.0,
        w_qabf: float = 0.0,
        win_size: int = 11,
        kernel_sigma: float = 1.5,
        intensity: str = "mse",
        intensity_target: str = "max",
        structure: str = "ssim",
        ms_ssim_scales: int = 3,
        structure_margin: float | None = None,
    ) -> None:
        super().__init__()
        self.w_ssim = float(w_ssim)
        self.w_int = float(w_int)
        self.w_grad = float(w_grad)
        self.w_qabf = float(w_qabf)
        self.structure_margin = None if structure_margin is None else float(structure_margin)
        self.win_size = int(win_size)
        self.kernel_sigma = float(kernel_sigma)
        for name, value, allowed in (("intensity", intensity, INTENSITY_FORMS),
                                     ("intensity_target", intensity_target, INTENSITY_TARGETS),
                                     ("structure", structure, STRUCTURE_FORMS)):
            if value not in allowed:
                raise ValueError(f"FusionLoss {name} must be one of {allowed}, got {value!r}")
        if not 1 <= int(ms_ssim_scales) <= len(_MS_SSIM_WEIGHTS):
            raise ValueError(f"ms_ssim_scales must be 1..{len(_MS_SSIM_WEIGHTS)}, got {ms_ssim_scales}")
        self.intensity, self.intensity_target, self.structure = intensity, intensity_target, structure
        weights = torch.tensor(_MS_SSIM_WEIGHTS[: int(ms_ssim_scales)])
        self.ms_ssim_weights = tuple((weights / weights.sum()).tolist())
        self.ssim_loss = SSIMLoss(
            spatial_dims=2, data_range=1.0, kernel_type="gaussian", win_size=win_size, kernel_sigma=kernel_sigma
        )

    def _min_size(self) -> int:
        if self.structure == "ms_ssim":
            return (self.win_size - 1) * 2 ** (len(self.ms_ssim_weights) - 1) + 1
        return self.win_size

    def _check(self, input: torch.Tensor, target: torch.Tensor) -> None:
        if input.dim() != 4 or input.shape[1] != 1:
            raise ValueError(f"FusionLoss expects the fused image as [N, 1, H, W], got {tuple(input.shape)}")
        if target.dim() != 4 or target.shape[1] != 2:
            raise ValueError(f"FusionLoss expects the sources as [N, 2, H, W], got {tuple(target.shape)}")
        if input.shape[0] != target.shape[0] or input.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"fused {tuple(input.shape)} and sources {tuple(target.shape)} differ in batch size or H, W"
            )
        if min(input.shape[-2:]) < self._min_size():
            raise ValueError(f"H and W must be >= {self._min_size()} for {self.structure} with the SSIM window "
                             f"{self.win_size}, got {tuple(input.shape[-2:])}")

    def _structure_loss(self, fused: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if self.structure == "ssim":
            return self.ssim_loss(fused, source)
        from monai.metrics.regression import compute_ms_ssim

        ms = compute_ms_ssim(fused, source, spatial_dims=2, data_range=1.0, kernel_type="gaussian",
                             kernel_size=(self.win_size,) * 2, kernel_sigma=(self.kernel_sigma,) * 2,
                             k1=0.01, k2=0.03, weights=self.ms_ssim_weights)
        return 1.0 - ms.mean()

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted terms ``ssim``, ``int``, ``grad`` (and ``qabf`` when its weight is not zero: it is computed only
        then) and the weighted ``total`` (all scalars), for logging."""
        self._check(input, target)
        fused = input.clamp(0.0, 1.0)
        target = target.to(fused.dtype)
        a, b = target[:, 0:1], target[:, 1:2]
        l_ssim = 0.5 * self._structure_loss(fused, a) + 0.5 * self._structure_loss(fused, b)
        if self.structure_margin is not None:
            mean = 0.5 * (a + b)
            floor = 0.5 * self._structure_loss(mean, a) + 0.5 * self._structure_loss(mean, b) + self.structure_margin
            l_ssim = torch.relu(l_ssim - floor.detach())
        goal = torch.maximum(a, b) if self.intensity_target == "max" else 0.5 * (a + b)
        l_int = F.mse_loss(fused, goal) if self.intensity == "mse" else F.l1_loss(fused, goal)
        grad_src = sobel_magnitude(target)
        l_grad = F.l1_loss(sobel_magnitude(fused), torch.maximum(grad_src[:, 0:1], grad_src[:, 1:2]))
        parts = {"ssim": l_ssim, "int": l_int, "grad": l_grad}
        total = self.w_ssim * l_ssim + self.w_int * l_int + self.w_grad * l_grad
        if self.w_qabf:
            parts["qabf"] = 1.0 - qabf_batch(fused, a, b).mean()
            total = total + self.w_qabf * parts["qabf"]
        return {**parts, "total": total}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """fused (N, 1, H, W), sources (N, 2, H, W) -> scalar loss."""
        return self.components(input, target)["total"]
