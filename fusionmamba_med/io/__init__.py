"""Input/output layer, one module a job:

- :mod:`.studies` (``discover_studies``) and :mod:`.naming` (``safe_name``): what to process and how outputs are named;
- :mod:`.loading` (``load_volume``, ``LoadStudyd``): any volume through MONAI readers, with the checks a batch needs;
  :mod:`.dicom_read` (``read_dicom_series``, ``DicomSeriesReader``): DICOM series, exactly as dcm2niix reads them;
- :mod:`.writers` (``FusedVolumeWriter``): the fused volume on the MRI grid as NIfTI / NRRD / DICOM;
  :mod:`.dicom_write` (``DicomSeriesWriter``): DICOM series;
- :mod:`.geometry`: RAS <-> LPS conversions; :mod:`.atomic` (``atomic_path``, ``write_json``): atomic writes;
- :mod:`.pairs` (``discover_pairs``) and :mod:`.images2d` (``read_image2d``, ``write_image2d``): 2D pairs.

Names are imported lazily so that ``import fusionmamba_med.io.naming`` stays light.
"""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

_EXPORTS = {
    "safe_name": "naming",
    "unique_names": "naming",
    "discover_studies": "studies",
    "load_datalist": "studies",
    "default_modalities": "studies",
    "DEFAULT_MODALITIES": "studies",
    "load_volume": "loading",
    "LoadStudyd": "loading",
    "list_dicom_series": "dicom_read",
    "read_dicom_series": "dicom_read",
    "DicomSeriesReader": "dicom_read",
    "DEFAULT_MAX_VOXELS": "dicom_read",
    "FusedVolumeWriter": "writers",
    "DicomSeriesWriter": "dicom_write",
    "atomic_path": "atomic",
    "write_json": "atomic",
    "write_summary": "atomic",
    "lps_to_ras": "geometry",
    "ras_to_lps": "geometry",
    "ras_affine_to_lps_geometry": "geometry",
    "lps_geometry_to_ras_affine": "geometry",
    "discover_pairs": "pairs",
    "IMAGE_EXTENSIONS": "pairs",
    "read_image2d": "images2d",
    "write_image2d": "images2d",
    "image_size2d": "images2d",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
