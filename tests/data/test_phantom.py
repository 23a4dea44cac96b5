"""The head phantom: anatomy where it should be, modality contrasts, resolution, seeding and grid sampling."""

from __future__ import annotations

import numpy as np
import pytest

from fusionmamba_med.data import phantom as P

NAMES = {v: k for k, v in P.LABELS.items()}


def label_at(point) -> str:
    return NAMES[int(P.phantom_labels(np.asarray(point, float)))]


@pytest.mark.parametrize(
    "point, expected",
    [
        ((200.0, 0.0, 0.0), "background"),
        ((71.0, 0.0, 0.0), "scalp"),  # between the skin (74 mm) and the skull (68 mm) along +x (patient right)
        ((65.0, 0.0, 0.0), "skull"),
        ((20.0, -10.0, 40.0), "white_matter"),
        ((0.0, 0.0, -120.0), "scalp"),  # the neck
    ],
)
def test_labels_follow_the_layers_of_the_head(point, expected):
    assert label_at(point) == expected


def test_landmarks_sit_in_their_structures():
    marks = P.landmarks()
    assert label_at(marks["lesion_centre"]) == "lesion"
    assert label_at(marks["right_eye"]) == label_at(marks["left_eye"]) == "eye"
    assert label_at(marks["right_ventricle"]) == label_at(marks["left_ventricle"]) == "ventricle"
    assert marks["right_eye"][0] > 0 > marks["left_eye"][0]  # RAS: +x is the patient's right


def test_a_custom_phantom_moves_the_lesion():
    moved = P.HeadPhantom(lesion_centre=(-25.0, 20.0, 30.0))
    assert NAMES[int(P.phantom_labels(np.array([-25.0, 20.0, 30.0]), moved))] == "lesion"
    assert label_at((-25.0, 20.0, 30.0)) != "lesion"


def _mean(fn, label: str, n: int = 4000) -> float:
    """Mean of fn over random points of one tissue inside the head."""
    rng = np.random.default_rng(1)
    pts = rng.uniform((-75, -95, -60), (75, 95, 80), size=(40000, 3))
    pts = pts[P.phantom_labels(pts) == P.LABELS[label]][:n]
    assert len(pts) > 20, label
    return float(np.mean(fn(pts)))


def test_modality_contrasts():
    t1 = lambda p: P.mri_t1(p, noise=0.0, bias=False)  # noqa: E731
    assert _mean(t1, "white_matter") > _mean(t1, "grey_matter") > _mean(t1, "csf")
    assert _mean(t1, "skull") < _mean(t1, "scalp")  # bone is dark on T1, scalp fat bright
    ct = lambda p: P.ct_hu(p, noise=0.0)  # noqa: E731
    assert _mean(ct, "background") < -950.0  # air (a little partial volume at the skin)
    assert _mean(ct, "skull") > 700.0 and _mean(ct, "grey_matter") < 60.0
    pet = lambda p: P.pet_activity(p, noise=0.0)  # noqa: E731
    assert _mean(pet, "lesion") > _mean(pet, "grey_matter") > _mean(pet, "white_matter") > _mean(pet, "ventricle")
    spect = lambda p: P.spect_activity(p, noise=0.0)  # noqa: E731
    assert _mean(spect, "lesion") > _mean(spect, "grey_matter") > _mean(spect, "ventricle")


def test_ct_skull_peak_is_in_the_bone_range():
    r = np.linspace(0.0, 100.0, 2001)
    line = np.stack([r, 0 * r, 0 * r + 20.0], axis=-1)
    hu = P.ct_hu(line, noise=0.0)
    assert 1000.0 < hu.max() < 1700.0
    assert hu[-1] == pytest.approx(-1000.0)


def test_emission_blur_follows_the_resolution():
    centre = np.array([P.landmarks()["lesion_centre"]])
    sharp = P.pet_activity(centre, fwhm_mm=6.0, noise=0.0)[0]
    blurred = P.pet_activity(centre, fwhm_mm=14.0, noise=0.0)[0]
    assert sharp > 1.2 * blurred
    # A profile across the lesion edge (radius 9 mm) is smooth, not a step.
    x = np.linspace(0.0, 20.0, 41)
    prof = P.pet_activity(centre + np.stack([x, 0 * x, 0 * x], -1), fwhm_mm=6.0, noise=0.0)
    assert np.max(np.abs(np.diff(prof))) < 0.25 * (prof.max() - prof.min())


def test_noise_is_seeded():
    pts = np.random.default_rng(0).uniform(-50, 50, size=(500, 3))
    assert np.array_equal(P.mri_t1(pts, seed=3), P.mri_t1(pts, seed=3))
    assert not np.array_equal(P.mri_t1(pts, seed=3), P.mri_t1(pts, seed=4))
    assert np.array_equal(P.spect_activity(pts, seed=3), P.spect_activity(pts, seed=3))
    assert np.all(P.mri_t1(pts) >= 0)  # magnitude (Rician) data


def test_sample_on_grid_evaluates_voxel_centres():
    aff = np.array([[-2.0, 0.0, 0.0, 10.0], [0.0, 0.0, 3.0, -5.0], [0.0, 1.5, 0.0, 7.0], [0, 0, 0, 1.0]])
    shape = (4, 5, 3)
    xs = P.sample_on_grid(lambda p: p[..., 0], shape, aff)
    zs = P.sample_on_grid(lambda p: p[..., 2], shape, aff)
    assert xs.shape == shape
    i, j, k = 3, 1, 2
    assert xs[i, j, k] == pytest.approx(10.0 - 2.0 * i)
    assert zs[i, j, k] == pytest.approx(7.0 + 1.5 * j)
    vol = P.sample_on_grid(P.phantom_labels, shape, aff)
    assert vol.dtype == np.int16 and vol.shape == shape
    with pytest.raises(ValueError):
        P.sample_on_grid(P.phantom_labels, (4, 5), aff)


def test_points_must_be_3d():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        P.phantom_labels(np.zeros((10, 2)))
