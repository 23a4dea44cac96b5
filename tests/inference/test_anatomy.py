"""Fusing only the anatomy's box: where the box is, what fills the rest, and that the output grid never changes."""

from __future__ import annotations

import torch

from fusionmamba_med.inference.anatomy import anatomy_box, anatomy_mask, fuse_within_anatomy


def _head(shape=(120, 100, 10), centre=(60, 40), radius=20, slices=(2, 8)):
    x, y = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    disc = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius ** 2).float()
    image = torch.zeros(2, *shape)
    image[0, ..., slices[0]:slices[1]] = 0.6 * disc[..., None]
    image[1, ..., slices[0]:slices[1]] = 0.3 * disc[..., None]
    image[0] += 0.03 * torch.rand(shape, generator=torch.Generator().manual_seed(0))  # MRI background noise
    return image


def test_the_box_holds_the_anatomy_plus_the_margin():
    image = _head()
    box = anatomy_box(image, threshold=0.1, margin=8)
    # disc: x 41..79, y 21..59 (block means reach a little beyond), slices 2..7 (+1 each side)
    assert box[0].start <= 41 - 8 and box[0].stop >= 80 + 8 and box[0].stop - box[0].start <= 39 + 16 + 8
    assert box[1].start <= 21 - 8 and box[1].stop >= 60 + 8
    assert (box[2].start, box[2].stop) == (1, 9)
    assert not anatomy_mask(image[:, :, :, :1], 0.1).any()  # noise alone is not anatomy


def test_box_sides_are_multiples_of_the_network_stride_within_the_grid():
    box = anatomy_box(_head(), threshold=0.1, margin=8, multiple=32)
    for s, size in zip(box[:2], (120, 100)):
        assert (s.stop - s.start) % 32 == 0 and 0 <= s.start and s.stop <= size
    wide = anatomy_box(_head(radius=45, centre=(60, 50)), threshold=0.1, margin=8, multiple=32)
    assert (wide[1].start, wide[1].stop) == (0, 100)  # more than the grid: the whole axis


def test_fusion_is_run_on_the_box_only_and_the_rest_is_filled_from_the_inputs():
    image = _head()
    seen = []

    def fuse(x):  # a pointwise network: the box's result equals the full grid's there
        seen.append(tuple(x.shape))
        return (x.amax(dim=0, keepdim=True) + 0.01).clamp(0, 1)

    out, info = fuse_within_anatomy(image, fuse, threshold=0.1, margin=8)
    assert out.shape == (1, 120, 100, 10) and seen == [(2, *[b - a for a, b in info["box"]])]
    full = fuse(image)
    box = (slice(None),) + tuple(slice(a, b) for a, b in info["box"])
    assert torch.equal(out[box], full[box])
    # outside: the inputs' mean plus the residual the network gave in the box's background (0.01 + half the noise)
    outside = torch.ones_like(out, dtype=torch.bool)
    outside[box] = False
    expected = (0.5 * (image[0:1] + image[1:2]) + info["fill_residual"]).clamp(0, 1)
    assert torch.equal(out[outside], expected[outside])
    assert 0.01 < info["fill_residual"] < 0.04 and info["fraction"] < 0.5


def test_no_anatomy_means_the_whole_grid():
    image = torch.zeros(2, 40, 40, 3)
    out, info = fuse_within_anatomy(image, lambda x: x[:1] + 0.5, threshold=0.1)
    assert info["fraction"] == 1.0 and torch.equal(out, torch.full((1, 40, 40, 3), 0.5))
