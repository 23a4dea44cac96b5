"""A 3D Slicer review scene per study: one file that opens the MRI, the fused volume and the moving image registered
onto the MRI grid, laid out and coloured for reading.

The scene is an MRML file (Slicer's XML scene format) that we write as text: no Slicer at run time. It references
the volumes by relative path (``<study>_review.mrml`` beside the outputs), or carries them (``<study>_review.mrb``, a
zip Slicer opens as one scene). Slicer reads every volume with its own readers (the volume archetype storage node:
NIfTI, NRRD, and a DICOM series given as its list of files), so the scene places the data exactly where Slicer places
the files themselves.

What a reader sees (Slicer's "3 over 3" layout, ``SlicerLayoutThreeOverThreeView``):

- top row (view group 0: Red, Green, Yellow = axial, coronal, sagittal): the fused volume, grey (or RGB);
- bottom row (view group 1: Red+, Green+, Yellow+): the MRI in grey with the registered PET / SPECT / CT over it in a
  colour map (Slicer's ``PET-Heat``; CT: ``Ocean``), thresholded so that the background stays transparent, at
  ``overlay_opacity``;
- window / level of every volume from its data (percentiles), slice views centred on the MRI and sized to it, the
  views of each row linked (``linkedControl``).

The scene is stamped ``Slicer5.0.0``: desktop Slicer warns when a scene comes from another application or a newer
version, and every Slicer 5 reads it without either warning.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from fusionmamba_med.io.atomic import atomic_path

__all__ = [
    "REVIEW_SCENE_FORMATS",
    "SCENE_VERSION",
    "COLOUR_NODES",
    "SceneVolume",
    "display_window",
    "review_scene_text",
    "write_review_scene",
]

#: ``--review_scene`` values: a scene referencing the outputs, a self-contained scene bundle, or none.
REVIEW_SCENE_FORMATS = ("mrml", "mrb", "none")

#: the MRML version stamp: the application name desktop Slicer checks, and the oldest version whose MRML we write.
SCENE_VERSION = "Slicer5.0.0 0"

#: Slicer's built-in colour nodes (present in every Slicer 5 scene) used for each modality's overlay.
COLOUR_NODES = {
    "grey": "vtkMRMLColorTableNodeGrey",
    "PET": "vtkMRMLPETProceduralColorNodePET-Heat",
    "SPECT": "vtkMRMLPETProceduralColorNodePET-Heat",
    "CT": "vtkMRMLColorTableNodeOcean",
}

#: Slicer's orientation presets (``vtkMRMLSliceNode``): slice x, y, normal axes as RAS columns, row-major.
_ORIENTATIONS = {
    "Axial": np.array([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float),
    "Sagittal": np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float),
    "Coronal": np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float),
}

#: the six views of the layout: (singleton tag, orientation, view group, label, colour).
_VIEWS = (
    ("Red", "Axial", 0, "R", "0.952941 0.290196 0.2"),
    ("Green", "Coronal", 0, "G", "0.431373 0.690196 0.294118"),
    ("Yellow", "Sagittal", 0, "Y", "0.929412 0.835294 0.298039"),
    ("Red+", "Axial", 1, "R+", "0.976471 0.662745 0.623529"),
    ("Green+", "Coronal", 1, "G+", "0.776471 0.878431 0.721569"),
    ("Yellow+", "Sagittal", 1, "Y+", "0.964706 0.913725 0.635294"),
)

#: ``vtkMRMLLayoutNode::SlicerLayoutThreeOverThreeView``.
THREE_OVER_THREE = 21

#: pixels of the square slice views the scene stores (Slicer resizes them to its windows, keeping the field of view).
_VIEW_PIXELS = 256


@dataclass
class SceneVolume:
    """One volume of a review scene.

    Args:
        name: the node's name in Slicer (e.g. ``"study01 MRI"``).
        files: the volume's file, or every file of a DICOM series (Slicer reads the list as one volume).
        colour: an RGB volume (vector volume in Slicer); else scalar.
        colour_node: Slicer colour node id for a scalar volume (see :data:`COLOUR_NODES`).
        window, level: display window / level, in the volume's own values.
        threshold: ``(lower, upper)``: voxels outside are transparent (an overlay's background); ``None``: all shown.
    """

    name: str
    files: Sequence[Path]
    colour: bool = False
    colour_node: str = COLOUR_NODES["grey"]
    window: float = 1.0
    level: float = 0.5
    threshold: tuple[float, float] | None = None
    node_id: str = field(default="", init=False)


def display_window(values, lower: float = 0.5, upper: float = 99.5) -> tuple[float, float]:
    """``(window, level)`` spanning the ``lower``..``upper`` percentiles of the finite voxels of ``values`` (any
    shape); a constant volume gets window 1 around its value."""
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0, 0.0
    if v.size > 2_000_000:  # percentiles of a regular subsample: same window to display precision, far less time
        v = v[:: v.size // 1_000_000]
    lo, hi = (float(x) for x in np.percentile(v, [lower, upper]))
    if not hi > lo:
        return 1.0, lo
    return hi - lo, (hi + lo) / 2


def _fmt(values) -> str:
    return " ".join(f"{float(x):.9g}" for x in np.asarray(values, dtype=float).ravel())


def _attrs(**items) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in items.items())


def _slice_geometry(affine: np.ndarray, shape: Sequence[int], orientation: str) -> tuple[np.ndarray, list[float]]:
    """The view's sliceToRAS (4, 4) and field of view (mm) that show the whole MRI grid, centred, in ``orientation``.

    ``affine``: the MRI's voxel-to-RAS (4, 4); ``shape``: its (X, Y, Z) voxels.
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    ras = (affine @ corners.T).T[:, :3]
    centre = (ras.min(0) + ras.max(0)) / 2
    axes = _ORIENTATIONS[orientation]
    extent = np.ptp(ras @ axes, axis=0)  # the grid's extent along the view's x, y and normal
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    side = float(max(extent[0], extent[1]) + spacing.max())  # whole voxels at the edges
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, :3] = axes
    slice_to_ras[:3, 3] = np.round(centre, 6)
    return slice_to_ras, [side, side, float(spacing.min())]


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators, as Slicer writes them); absolute where no relative path
    exists (another drive)."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _volume_nodes(vol: SceneVolume, index: int, relative_to: Path) -> str:
    """The storage, display and volume nodes of one volume (files by path relative to the scene's folder)."""
    files = [_relative(Path(f), relative_to) for f in vol.files]
    storage_id = f"vtkMRMLVolumeArchetypeStorageNode{index}"
    members = {f"fileListMember{i}": f for i, f in enumerate(files)} if len(files) > 1 else {}
    storage = (f' <VolumeArchetypeStorage\n  {_attrs(id=storage_id, name=f"{vol.name} storage", fileName=files[0], **members)}'
               f' {_attrs(useCompression=1, centerImage=0, UseOrientationFromFile=1, singleFile=int(len(files) == 1))}'
               '></VolumeArchetypeStorage>\n')
    if vol.colour:
        display_id, display_tag, volume_tag = f"vtkMRMLVectorVolumeDisplayNode{index}", "VectorVolumeDisplay", "VectorVolume"
        vol.node_id = f"vtkMRMLVectorVolumeNode{index}"
        display_attrs = _attrs(visualizationMode=0, scalarMode=0)
    else:
        display_id, display_tag, volume_tag = f"vtkMRMLScalarVolumeDisplayNode{index}", "VolumeDisplay", "Volume"
        vol.node_id = f"vtkMRMLScalarVolumeNode{index}"
        lower, upper = vol.threshold if vol.threshold is not None else (-3.4e38, 3.4e38)
        display_attrs = _attrs(colorNodeID=vol.colour_node, window=f"{vol.window:.9g}", level=f"{vol.level:.9g}",
                               autoWindowLevel=0, applyThreshold=int(vol.threshold is not None), autoThreshold=0,
                               lowerThreshold=f"{lower:.9g}", upperThreshold=f"{upper:.9g}")
    display = (f' <{display_tag}\n  {_attrs(id=display_id, name=f"{vol.name} display", interpolate=1)} {display_attrs}'
               f'></{display_tag}>\n')
    volume = (f' <{volume_tag}\n  {_attrs(id=vol.node_id, name=vol.name)}'
              f' {_attrs(references=f"display:{display_id};storage:{storage_id};")}></{volume_tag}>\n')
    return storage + display + volume


def _view_nodes(fused: SceneVolume, background: SceneVolume, overlay: SceneVolume | None, affine: np.ndarray,
                shape: Sequence[int], overlay_opacity: float) -> str:
    """Six slice views: the fused volume on top, the MRI with the overlay below; each row's views linked."""
    out = []
    for tag, orientation, group, label, colour in _VIEWS:
        slice_to_ras, fov = _slice_geometry(affine, shape, orientation)
        # Slicer 5 writes and reads a view's group as a boolean ("true" = group 1); an integer is read as group 0
        view_group = "true" if group else "false"
        out.append(f' <Slice\n  {_attrs(id=f"vtkMRMLSliceNode{tag}", name=tag, singletonTag=tag, layoutName=tag)}'
                   f' {_attrs(layoutLabel=label, layoutColor=colour, viewGroup=view_group, orientation=orientation)}'
                   f' {_attrs(orientationReference=orientation, sliceToRAS=_fmt(slice_to_ras), fieldOfView=_fmt(fov))}'
                   f' {_attrs(dimensions=f"{_VIEW_PIXELS} {_VIEW_PIXELS} 1", xyzOrigin="0 0 0", sliceResolutionMode=1)}'
                   '></Slice>\n')
        refs = f"backgroundVolume:{fused.node_id};" if group == 0 else f"backgroundVolume:{background.node_id};"
        opacity = 0.0
        if group == 1 and overlay is not None:
            refs += f"foregroundVolume:{overlay.node_id};"
            opacity = overlay_opacity
        out.append(f' <SliceComposite\n  {_attrs(id=f"vtkMRMLSliceCompositeNode{tag}", name=f"SliceComposite {tag}")}'
                   f' {_attrs(singletonTag=tag, layoutName=tag, references=refs, compositing=0)}'
                   f' {_attrs(foregroundOpacity=f"{opacity:g}", labelOpacity=1, linkedControl=1, hotLinkedControl=0)}'
                   '></SliceComposite>\n')
    return "".join(out)


def review_scene_text(scene_folder: Path, mri: SceneVolume, fused: SceneVolume, overlay: SceneVolume | None,
                      affine: np.ndarray, shape: Sequence[int], overlay_opacity: float = 0.6) -> str:
    """The MRML text of a review scene saved in ``scene_folder`` (files referenced relative to it).

    ``affine`` (4, 4) voxel-to-RAS and ``shape`` (X, Y, Z) are the MRI grid's, which every volume shares.
    """
    affine = np.asarray(affine, dtype=float)
    volumes = [v for v in (mri, overlay, fused) if v is not None]
    body = "".join(_volume_nodes(v, i + 1, scene_folder) for i, v in enumerate(volumes))
    layout = (f' <Layout\n  {_attrs(id="vtkMRMLLayoutNodevtkMRMLLayoutNode", name="Layout")}'
              f' {_attrs(singletonTag="vtkMRMLLayoutNode", currentViewArrangement=THREE_OVER_THREE)}></Layout>\n')
    views = _view_nodes(fused, mri, overlay, affine, shape, overlay_opacity)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<MRML {_attrs(version=SCENE_VERSION, userTags="")}>\n'
            f'{body}{layout}{views}</MRML>\n')


def _bundle_files(volumes: Sequence[SceneVolume], data: Path) -> None:
    """Copy every volume's files into ``data`` (one sub-folder per multi-file volume) and point the volumes at the
    copies."""
    data.mkdir(parents=True, exist_ok=True)
    for i, vol in enumerate(volumes):
        target = data / f"{i + 1}_{Path(vol.files[0]).parent.name}" if len(vol.files) > 1 else data
        target.mkdir(parents=True, exist_ok=True)
        copies = []
        for f in vol.files:
            dst = target / (Path(f).name if len(vol.files) > 1 else f"{i + 1}_{Path(f).name}")
            shutil.copyfile(f, dst)
            copies.append(dst)
        vol.files = copies


def write_review_scene(path: str | os.PathLike, mri: SceneVolume, fused: SceneVolume, overlay: SceneVolume | None,
                       affine: np.ndarray, shape: Sequence[int], overlay_opacity: float = 0.6) -> Path:
    """Write a review scene: ``path`` ending ``.mrml`` references the files where they are; ``.mrb`` is a zip holding
    the scene and copies of its files (``<stem>/<stem>.mrml``, ``<stem>/Data/...``), as Slicer saves one.

    Returns ``path``. Written atomically (a temporary name, renamed when complete).
    """
    path = Path(path)
    if path.suffix == ".mrml":
        with atomic_path(path) as tmp:
            tmp.write_text(review_scene_text(path.parent, mri, fused, overlay, affine, shape, overlay_opacity),
                           encoding="utf-8")
        return path
    if path.suffix != ".mrb":
        raise ValueError(f"a review scene ends .mrml or .mrb, got {path.name}")
    stem = path.stem
    with tempfile.TemporaryDirectory(prefix=f".{stem}.staging-", dir=path.parent) as staging, atomic_path(path) as tmp:
        root = Path(staging) / stem
        volumes = [v for v in (mri, overlay, fused) if v is not None]
        _bundle_files(volumes, root / "Data")
        scene = root / f"{stem}.mrml"
        scene.write_text(review_scene_text(root, mri, fused, overlay, affine, shape, overlay_opacity), encoding="utf-8")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(p for p in root.rglob("*") if p.is_file()):  # fixed order and dates: same bytes every run
                info = zipfile.ZipInfo(f.relative_to(staging).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f.read_bytes())
    return path
