"""A deterministic, anatomy-like 3D head phantom defined in physical space (RAS, mm).

The phantom is a stack of soft-edged regions painted in order (later regions cover earlier ones): neck and scalp,
skull (compact tables with a marrow-filled diploe), CSF, a cortex whose grey/white boundary and sulci are folded by
low-order spherical cosines, deep grey nuclei, the falx, lateral ventricles, orbits and eyes, and a lesion with
surrounding oedema. Every function takes world points ``(..., 3)`` in RAS millimetres and returns values ``(...)``,
so the same anatomy can be sampled on any grid (oblique, anisotropic, rotated) with :func:`sample_on_grid`.

- :func:`phantom_labels`: integer tissue labels (see :data:`LABELS`);
- :func:`mri_t1`: T1-weighted signal (0..~1) with a smooth bias field and Rician noise;
- :func:`ct_hu`: CT in Hounsfield units (air -1000, bone ~1000-1500 after partial volume) with light noise;
- :func:`pet_activity` / :func:`spect_activity`: tracer activity (bright lesion, grey matter uptake), blurred by the
  scanner resolution (computed once on a fixed 2 mm grid around the head, Gaussian-blurred, then interpolated).

Everything is a pure function of the points, the :class:`HeadPhantom` parameters and the seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, spline_filter
from scipy.special import expit

__all__ = [
    "LABELS",
    "HeadPhantom",
    "landmarks",
    "phantom_labels",
    "tissue_property",
    "mri_t1",
    "ct_hu",
    "pet_activity",
    "spect_activity",
    "grid_points",
    "sample_on_grid",
]

#: tissue label values returned by :func:`phantom_labels`.
LABELS: dict[str, int] = {
    "background": 0,
    "scalp": 1,  # skin, subcutaneous tissue, muscle of the neck
    "skull": 2,
    "csf": 3,
    "grey_matter": 4,
    "white_matter": 5,
    "ventricle": 6,
    "eye": 7,
    "lesion": 8,
    "oedema": 9,
    "fat": 10,  # orbital fat
}

# Per-region properties: T1 signal, CT HU, PET activity (kBq/ml), SPECT activity (a.u.).
_PROPS: dict[str, dict[str, float]] = {
    "background": {"t1": 0.0, "ct": -1000.0, "pet": 0.0, "spect": 0.0},
    "scalp": {"t1": 0.80, "ct": 25.0, "pet": 0.9, "spect": 0.6},
    "skull": {"t1": 0.08, "ct": 1700.0, "pet": 0.3, "spect": 0.3},
    "diploe": {"t1": 0.55, "ct": 750.0, "pet": 0.5, "spect": 0.4},
    "csf": {"t1": 0.14, "ct": 8.0, "pet": 0.3, "spect": 0.3},
    "grey_matter": {"t1": 0.47, "ct": 40.0, "pet": 7.0, "spect": 4.0},
    "white_matter": {"t1": 0.72, "ct": 27.0, "pet": 2.2, "spect": 1.5},
    "ventricle": {"t1": 0.12, "ct": 5.0, "pet": 0.2, "spect": 0.2},
    "eye": {"t1": 0.16, "ct": 12.0, "pet": 1.0, "spect": 0.8},
    "lens": {"t1": 0.55, "ct": 110.0, "pet": 1.0, "spect": 0.8},
    "lesion": {"t1": 0.60, "ct": 58.0, "pet": 18.0, "spect": 14.0},
    "oedema": {"t1": 0.36, "ct": 18.0, "pet": 1.6, "spect": 1.2},
    "fat": {"t1": 0.95, "ct": -90.0, "pet": 0.4, "spect": 0.3},
}


@dataclass(frozen=True)
class HeadPhantom:
    """Geometry of the phantom (RAS mm, head centred near the origin). Frozen, so it can key caches.

    ``lesion_centre``/``lesion_radius`` place the tumour; ``edge_mm`` is the width of the soft tissue boundaries
    (partial volume). The defaults give an adult-sized head: 148 x 188 x 164 mm.
    """

    skin_axes: tuple[float, float, float] = (74.0, 94.0, 82.0)
    skull_outer_axes: tuple[float, float, float] = (68.0, 88.0, 76.0)
    skull_inner_axes: tuple[float, float, float] = (62.0, 82.0, 70.0)
    brain_axes: tuple[float, float, float] = (60.0, 80.0, 68.0)
    lesion_centre: tuple[float, float, float] = (26.0, 20.0, 30.0)
    lesion_radius: float = 9.0
    oedema_radius: float = 14.0
    eye_centres: tuple[tuple[float, float, float], ...] = ((-31.0, 64.0, -36.0), (31.0, 64.0, -36.0))
    eye_radius: float = 11.0
    edge_mm: float = 0.6
    fold_phase: float = 0.0


DEFAULT_PHANTOM = HeadPhantom()

_VENTRICLES = (((-9.0, 0.0, 14.0), (6.0, 26.0, 9.0), -14.0), ((9.0, 0.0, 14.0), (6.0, 26.0, 9.0), 14.0))
_NUCLEI = (((-19.0, 2.0, 2.0), (8.0, 15.0, 10.0)), ((19.0, 2.0, 2.0), (8.0, 15.0, 10.0)))


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ellipsoid(p: np.ndarray, centre, axes, rot: np.ndarray | None = None):
    """Approximate signed distance (mm, < 0 inside) to an ellipsoid: ``(d, r, q, |grad r|)``, all (...) but ``q``.

    ``r`` is the normalised radius (1 on the surface), ``q`` (..., 3) the offsets in the ellipsoid's own axes;
    ``rot`` maps those axes to world axes. ``d = (r - 1) / |grad r|`` is exact on the surface.
    """
    q = p - np.asarray(centre, float)
    if rot is not None:
        q = q @ rot  # world -> local
    a = np.asarray(axes, float)
    r = np.sqrt(np.sum((q / a) ** 2, axis=-1))
    g = np.sqrt(np.sum((q / a**2) ** 2, axis=-1))
    grad = np.where(r > 1e-9, g / np.maximum(r, 1e-9), 1.0 / a.min())  # |grad r|
    return (r - 1.0) / grad, r, q, grad


def _folds(q: np.ndarray, phase: float) -> np.ndarray:
    """Gyral pattern in [-1, 1]: a few spherical cosines of the direction of ``q``."""
    rho = np.sqrt(np.sum(q**2, axis=-1)) + 1e-9
    theta = np.arccos(np.clip(q[..., 2] / rho, -1.0, 1.0))
    phi = np.arctan2(q[..., 1], q[..., 0]) + phase
    g = (
        np.cos(9.0 * theta + 0.8 * np.sin(3.0 * phi)) * np.cos(13.0 * phi + 0.5)
        + np.cos(14.0 * theta + 1.1) * np.sin(18.0 * phi + 2.0 * np.cos(2.0 * theta))
        + 0.7 * np.cos(6.0 * theta + 11.0 * phi + 0.3)
    )
    return g / 2.7


def _outer_distance(p: np.ndarray, ph: HeadPhantom) -> np.ndarray:
    """Signed distance (mm) to the body outline: the head ellipsoid merged with an elliptic-cylinder neck."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    d_skin = _ellipsoid(p, (0, 0, 0), ph.skin_axes)[0]
    d_neck = np.maximum(np.sqrt((x / 52.0) ** 2 + ((y + 12.0) / 58.0) ** 2) * 52.0 - 52.0, z + 20.0)
    return np.minimum(d_skin, d_neck)


def _regions(p: np.ndarray, ph: HeadPhantom) -> list[tuple[str, str, np.ndarray]]:
    """``[(property name, label name, signed distance)]`` in painting order."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    d_skin = _ellipsoid(p, (0, 0, 0), ph.skin_axes)[0]
    d_skull_out = _ellipsoid(p, (0, 0, 0), ph.skull_outer_axes)[0]
    d_skull_in = _ellipsoid(p, (0, 0, 0), ph.skull_inner_axes)[0]
    # Diploe: the marrow-filled middle of the bone shell, between the outer and inner tables.
    mid = tuple(0.5 * (a + b) for a, b in zip(ph.skull_outer_axes, ph.skull_inner_axes))
    d_diploe = np.abs(_ellipsoid(p, (0, 0, 0), mid)[0]) - 1.4
    _, r_b, q_b, grad_b = _ellipsoid(p, (0, 0, 0), ph.brain_axes)
    g = _folds(q_b, ph.fold_phase)
    # Sulci: narrow CSF clefts along two level lines of the fold field, lined with grey matter.
    sulcus = np.maximum(np.clip(1.0 - np.abs(g + 0.25) / 0.12, 0.0, 1.0),
                        np.clip(1.0 - np.abs(g - 0.35) / 0.10, 0.0, 1.0))
    surf = 1.0 + 0.015 * g - 0.22 * sulcus
    d_brain = (r_b - surf) / grad_b
    # White matter follows the gyri, 6-9 mm below the folded surface (cortex plus partial volume).
    d_wm = (r_b - (surf - 0.10 - 0.04 * (1.0 - g) / 2.0)) / grad_b
    # Falx: a thin CSF sheet in the mid-sagittal plane, over the upper brain.
    d_falx = np.maximum(np.maximum(np.abs(x) - 0.7, -(z + 2.0 + 0.15 * y)), d_skull_in)
    regions: list[tuple[str, str, np.ndarray]] = [
        ("scalp", "scalp", _outer_distance(p, ph)),
        ("skull", "skull", d_skull_out),
        ("diploe", "skull", np.maximum(d_diploe, d_skull_out)),
        ("csf", "csf", d_skull_in),
        ("grey_matter", "grey_matter", np.maximum(d_brain, d_skull_in)),
        ("white_matter", "white_matter", np.maximum(d_wm, d_skull_in)),
    ]
    for centre, axes in _NUCLEI:
        regions.append(("grey_matter", "grey_matter", _ellipsoid(p, centre, axes)[0]))
    regions.append(("csf", "csf", d_falx))
    for centre, axes, angle in _VENTRICLES:
        regions.append(("ventricle", "ventricle", _ellipsoid(p, centre, axes, _rot_z(angle))[0]))
    # Lesion with an irregular (low-order) oedema rim.
    ql = p - np.asarray(ph.lesion_centre, float)
    rl = np.sqrt(np.sum(ql**2, axis=-1))
    u = ql / (rl[..., None] + 1e-9)
    wobble = (0.6 * np.cos(3.0 * u[..., 0] + 2.0 * u[..., 1]) * np.cos(2.0 * u[..., 2] + 1.0)
              + 0.4 * np.sin(4.0 * u[..., 1] - u[..., 2]))
    regions.append(("oedema", "oedema", np.maximum(rl - ph.oedema_radius * (1.0 + 0.25 * wobble), d_skull_in)))
    regions.append(("lesion", "lesion", rl - ph.lesion_radius))
    for centre in ph.eye_centres:
        c = np.asarray(centre, float)
        regions.append(("fat", "fat", np.maximum(_ellipsoid(p, c + (0, -8.0, 0), (16.0, 22.0, 15.0))[0], d_skin)))
        regions.append(("eye", "eye", np.sqrt(np.sum((p - c) ** 2, axis=-1)) - ph.eye_radius))
        lens = c + (0.0, ph.eye_radius - 2.5, 0.0)
        regions.append(("lens", "eye", _ellipsoid(p, lens, (4.0, 1.8, 4.0))[0]))
    return regions


def _inside(p: np.ndarray, ph: HeadPhantom) -> np.ndarray:
    """Points close enough to the body to need the full evaluation (farther ones are pure background)."""
    return _outer_distance(p, ph) < 12.0 * ph.edge_mm


def _as_points(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3) in RAS mm, got {p.shape}")
    return p


def phantom_labels(points_ras, phantom: HeadPhantom | None = None) -> np.ndarray:
    """Tissue labels (int16, values from :data:`LABELS`) at ``points_ras`` (..., 3) -> (...)."""
    ph = phantom or DEFAULT_PHANTOM
    p = _as_points(points_ras)
    out = np.zeros(p.shape[:-1], dtype=np.int16)
    inside = _inside(p, ph)
    sub = np.zeros(int(inside.sum()), dtype=np.int16)
    for _, label, d in _regions(p[inside], ph):
        sub[d < 0] = LABELS[label]
    out[inside] = sub
    return out


def tissue_property(points_ras, prop: str, phantom: HeadPhantom | None = None) -> np.ndarray:
    """Noise-free, partial-volume value of ``prop`` ("t1", "ct", "pet" or "spect") at points (..., 3) -> (...)."""
    if prop not in _PROPS["background"]:
        raise ValueError(f"unknown property {prop!r}; expected one of {sorted(_PROPS['background'])}")
    ph = phantom or DEFAULT_PHANTOM
    p = _as_points(points_ras)
    value = np.full(p.shape[:-1], _PROPS["background"][prop], dtype=np.float64)
    inside = _inside(p, ph)
    sub = value[inside]
    for name, _, d in _regions(p[inside], ph):
        m = expit(-d / ph.edge_mm)
        sub += m * (_PROPS[name][prop] - sub)
    value[inside] = sub
    return value


def landmarks(phantom: HeadPhantom | None = None) -> dict[str, tuple[float, float, float]]:
    """Named anatomical points (RAS mm): lesion centre, eye centres, ventricle centres, head centre."""
    ph = phantom or DEFAULT_PHANTOM
    right_eye, left_eye = sorted(ph.eye_centres, key=lambda c: -c[0])  # RAS: +x is the patient's right
    return {
        "lesion_centre": tuple(float(v) for v in ph.lesion_centre),
        "right_eye": tuple(float(v) for v in right_eye),
        "left_eye": tuple(float(v) for v in left_eye),
        "right_ventricle": tuple(float(v) for v in _VENTRICLES[1][0]),
        "left_ventricle": tuple(float(v) for v in _VENTRICLES[0][0]),
        "head_centre": (0.0, 0.0, 0.0),
    }


def _bias_field(p: np.ndarray) -> np.ndarray:
    """Smooth multiplicative receive-coil bias (about 0.85..1.15 over the head)."""
    x, y, z = p[..., 0] / 100.0, p[..., 1] / 100.0, p[..., 2] / 100.0
    return 1.0 + 0.08 * x - 0.06 * y + 0.05 * z - 0.07 * (x**2 + 0.5 * y**2) + 0.04 * np.cos(2.0 * z + 0.5 * x)


def mri_t1(points_ras, seed: int = 0, noise: float = 0.02, bias: bool = True,
           phantom: HeadPhantom | None = None) -> np.ndarray:
    """T1-weighted MRI signal at points (..., 3) -> (...) float32, white matter ~0.7, air ~noise level.

    ``noise`` is the standard deviation of the complex Gaussian noise (magnitude -> Rician), drawn from ``seed``.
    """
    p = _as_points(points_ras)
    s = tissue_property(p, "t1", phantom)
    if bias:
        s = s * _bias_field(p)
    if noise > 0:
        rng = np.random.default_rng(seed)
        n1 = rng.normal(0.0, noise, size=s.shape)
        n2 = rng.normal(0.0, noise, size=s.shape)
        s = np.sqrt((s + n1) ** 2 + n2**2)
    return s.astype(np.float32)


def ct_hu(points_ras, seed: int = 0, noise: float = 4.0, phantom: HeadPhantom | None = None) -> np.ndarray:
    """CT in Hounsfield units at points (..., 3) -> (...) float32 (air -1000, bone 750-1700, brain 25-40)."""
    p = _as_points(points_ras)
    hu = tissue_property(p, "ct", phantom)
    if noise > 0:
        rng = np.random.default_rng(seed)
        inside = hu > -900.0  # scanner noise in the object; air stays clean (-1000)
        hu = hu + inside * rng.normal(0.0, noise, size=hu.shape)
    return hu.astype(np.float32)


# Fixed auxiliary grid for emission images: 2 mm, covering the head and neck (RAS mm).
_AUX_SPACING = 2.0
_AUX_LO = np.array([-100.0, -120.0, -150.0])
_AUX_SHAPE = (101, 121, 131)


@functools.lru_cache(maxsize=8)
def _emission_volume(prop: str, fwhm_mm: float, noise: float, seed: int, phantom: HeadPhantom) -> np.ndarray:
    """Cubic-spline coefficients of the activity on the auxiliary grid (multiplicative noise, Gaussian blur)."""
    axes = [_AUX_LO[i] + _AUX_SPACING * np.arange(n) for i, n in enumerate(_AUX_SHAPE)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    act = tissue_property(pts, prop, phantom)
    if noise > 0:
        act = act * (1.0 + np.random.default_rng(seed).normal(0.0, noise, size=act.shape))
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / _AUX_SPACING
    vol = gaussian_filter(act, sigma=sigma, mode="constant", cval=0.0) if sigma > 0 else act
    coeffs = spline_filter(np.maximum(vol, 0.0), order=3, mode="constant")  # cubic: no lattice pattern
    coeffs.setflags(write=False)
    return coeffs


def _emission(points_ras, prop: str, fwhm_mm: float, noise: float, seed: int,
              phantom: HeadPhantom | None) -> np.ndarray:
    p = _as_points(points_ras)
    vol = _emission_volume(prop, float(fwhm_mm), float(noise), int(seed), phantom or DEFAULT_PHANTOM)
    idx = (p - _AUX_LO) / _AUX_SPACING
    flat = idx.reshape(-1, 3).T
    out = map_coordinates(vol, flat, order=3, mode="constant", cval=0.0, prefilter=False)
    return np.maximum(out, 0.0).reshape(p.shape[:-1]).astype(np.float32)


def pet_activity(points_ras, fwhm_mm: float = 6.0, noise: float = 1.0, seed: int = 0,
                 phantom: HeadPhantom | None = None) -> np.ndarray:
    """FDG-like PET activity (kBq/ml) at points (..., 3) -> (...) float32: grey matter ~7, lesion ~18 before blur.

    Blurred by a Gaussian PSF of ``fwhm_mm``; ``noise`` is the relative noise before the blur (seeded).
    """
    return _emission(points_ras, "pet", fwhm_mm, noise, seed, phantom)


def spect_activity(points_ras, fwhm_mm: float = 12.0, noise: float = 2.5, seed: int = 0,
                   phantom: HeadPhantom | None = None) -> np.ndarray:
    """Perfusion/tumour SPECT activity (a.u.) at points (..., 3) -> (...) float32, blurred by ``fwhm_mm``."""
    return _emission(points_ras, "spect", fwhm_mm, noise, seed, phantom)


def grid_points(shape: Sequence[int], affine) -> np.ndarray:
    """World points (shape + (3,)) of the voxel centres of a grid with a 4x4 voxel -> RAS ``affine``."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {aff.shape}")
    idx = np.stack(np.meshgrid(*[np.arange(int(n), dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    return idx @ aff[:3, :3].T + aff[:3, 3]


def sample_on_grid(fn: Callable[[np.ndarray], np.ndarray], shape: Sequence[int], affine) -> np.ndarray:
    """Evaluate ``fn(points (..., 3) RAS mm)`` at the voxel centres of a 3D grid -> array of ``shape``.

    Example: ``sample_on_grid(ct_hu, (64, 64, 20), np.diag([-2.0, -2.0, 5.0, 1.0]))``.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be 3D, got {tuple(shape)}")
    return np.asarray(fn(grid_points(shape, affine)))
