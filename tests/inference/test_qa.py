"""QA montages: one column per volume, one row per slice with signal, written atomically."""

import numpy as np
import torch
from PIL import Image

from fusionmamba_med.inference.qa import qa_montage, save_qa_montage


def _volume(z_with_signal=range(8, 24), shape=(32, 24, 32)):
    vol = np.zeros((1, *shape), np.float32)
    for k in z_with_signal:
        vol[0, 8:24, 6:18, k] = 0.8
    return vol


def test_columns_rows_and_scale():
    mri, fused = _volume(), torch.as_tensor(_volume()) * 0.5
    rgb = np.repeat(_volume(), 3, axis=0)
    img = qa_montage([mri, fused, rgb], ["MRI", "fused", "colour"], n_slices=4)
    scale = 192 // 32  # tiles are scaled up to about 192 pixels
    assert img.size == (3 * 32 * scale, 16 + 4 * 24 * scale)  # 3 columns of X, 4 rows of Y, a title band


def test_rows_come_from_slices_with_signal():
    img = np.asarray(qa_montage([_volume(z_with_signal=range(20, 28))], ["MRI"], n_slices=2))
    rows = img[16:].reshape(2, -1, img.shape[1], 3)
    assert all(r.max() > 150 for r in rows)  # both chosen slices show the bright block, none is empty


def test_save_is_atomic_and_readable(tmp_path):
    path = save_qa_montage(tmp_path / "qa" / "s1_qa.png", [_volume()], ["MRI"])
    assert Image.open(path).format == "PNG" and sorted(p.name for p in path.parent.iterdir()) == ["s1_qa.png"]
