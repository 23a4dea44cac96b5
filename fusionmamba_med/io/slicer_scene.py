"""3D Slicer's own libraries (``slicer-core``, the optional extra ``slicer``) as the reader of our outputs: open a
volume or a review scene exactly as Slicer does, read back its geometry, values and display, and render its slice
views off-screen (no window, no OpenGL: the pixels Slicer's slice logic blends for each view).

Used by the tests (Slicer as the oracle) and by ``benchmarks/render_review.py`` (the README's pictures); nothing
at run time needs it. ``import fusionmamba_med.io.slicer_scene`` fails with a clear ``ImportError`` without
slicer-core.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

try:
    import slicer
    import vtk
    from vtk.util import numpy_support
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise ImportError("3D Slicer's libraries are not installed: pip install -e '.[slicer]' (slicer-core)") from err

__all__ = ["SlicerScene", "VIEW_TAGS", "ijk_to_ras", "volume_array"]

#: the review layout's views: the top row (fused) and the bottom row (MRI + overlay).
VIEW_TAGS = ("Red", "Green", "Yellow", "Red+", "Green+", "Yellow+")


def ijk_to_ras(node) -> np.ndarray:
    """A volume node's voxel (IJK) to RAS matrix (4, 4) as Slicer holds it."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(node) -> np.ndarray:
    """A volume node's voxels as Slicer holds them, indexed [i, j, k] (and component last for a vector volume)."""
    image = node.GetImageData()
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    comps = image.GetNumberOfScalarComponents()
    arr = flat.reshape(dims[2], dims[1], dims[0], comps)  # VTK: x fastest
    arr = np.transpose(arr, (2, 1, 0, 3))
    return arr[..., 0] if comps == 1 else arr


class SlicerScene:
    """An MRML scene with the logic desktop Slicer sets up for it (application, colours, volumes, slice orientation
    presets), to load files and scenes the way Slicer does.

    Example::

        scene = SlicerScene()
        scene.import_scene("out/study01/study01_review.mrml")   # errors -> scene.messages
        fused = scene.node_by_name("study01 fused")
        ijk_to_ras(fused), volume_array(fused)
        views = scene.render_views(size=256)                   # {"Red": (256, 256, 3) uint8, ...}
    """

    def __init__(self):
        self._output = vtk.vtkStringOutputWindow()  # VTK's errors and warnings, kept instead of printed
        vtk.vtkOutputWindow.SetInstance(self._output)
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # the same text, printed: kept above instead
        self._messages: list[str] = []
        self._skip = 0
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkMRMLApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic("Colors", self.color_logic)
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLApplicationLogic(self.app_logic)
        self.volumes_logic.SetMRMLScene(self.scene)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        self._skip = len(self._output.GetOutput())  # set-up chatter (e.g. colour files a desktop Slicer ships) is not the data's

    @property
    def messages(self) -> list[str]:
        """Errors and warnings Slicer reported since the scene was made (VTK's output and the scene's messages)."""
        vtk_text = [line.strip() for line in self._output.GetOutput()[self._skip:].splitlines() if line.strip()]
        return vtk_text + self._messages

    # -- reading ---------------------------------------------------------------------------------------------------
    def load_volume(self, path: str | os.PathLike, name: str = "volume", files: list | None = None):
        """One volume through Slicer's volume archetype storage node (its reader of NIfTI, NRRD and DICOM files).

        ``files``: every file of a DICOM series (Slicer reads the list as one volume); ``path`` is then the first.
        """
        if files:
            names = vtk.vtkStringArray()
            for f in files:
                names.InsertNextValue(str(f))
            return self.volumes_logic.AddArchetypeVolume(str(path), name, 0, names)
        return self.volumes_logic.AddArchetypeVolume(str(path), name)

    def import_scene(self, path: str | os.PathLike) -> bool:
        """Import an ``.mrml`` scene, or open an ``.mrb`` scene bundle, as Slicer's File > Load does; ``False`` when
        Slicer says it failed. Messages (errors, warnings) go to :attr:`messages`."""
        path = Path(path)
        if path.suffix == ".mrb":
            import tempfile

            self._mrb_dir = tempfile.TemporaryDirectory(prefix="mrb-")
            return bool(self.app_logic.OpenSlicerDataBundle(str(path), self._mrb_dir.name))
        collection = slicer.vtkMRMLMessageCollection()
        self.scene.SetURL(str(path))
        ok = bool(self.scene.Import(collection))
        for i in range(collection.GetNumberOfMessages()):
            self._messages.append(f"scene: {collection.GetNthMessageText(i)}")
        return ok

    def nodes(self, class_name: str = "vtkMRMLVolumeNode") -> list:
        """The scene's nodes of a class (and its subclasses)."""
        return [self.scene.GetNthNodeByClass(i, class_name) for i in range(self.scene.GetNumberOfNodesByClass(class_name))]

    def node_by_name(self, name: str):
        """The one volume node called ``name``."""
        found = [n for n in self.nodes() if n.GetName() == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} volume nodes named {name!r}; the scene has {[n.GetName() for n in self.nodes()]}")
        return found[0]

    # -- rendering -------------------------------------------------------------------------------------------------
    def render_view(self, tag: str, size: int = 256) -> np.ndarray:
        """The slice view ``tag`` ("Red", "Yellow+", ...) as Slicer blends it: background, foreground at its
        opacity, thresholds and colour maps applied; (size, size, 3) uint8, top row first. The view keeps the scene's
        field of view (its width; the height follows the square view)."""
        slice_node = self.scene.GetNodeByID(f"vtkMRMLSliceNode{tag}")
        if slice_node is None:
            raise KeyError(f"the scene has no slice view {tag!r}")
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        logic.SetSliceNode(slice_node)
        slice_node.SetDimensions(size, size, 1)
        producer = logic.GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        w, h, _ = image.GetDimensions()
        rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)
        return np.ascontiguousarray(rgba[::-1, :, :3]).astype(np.uint8)

    def render_views(self, tags=VIEW_TAGS, size: int = 256) -> dict[str, np.ndarray]:
        """:meth:`render_view` of each view."""
        return {tag: self.render_view(tag, size) for tag in tags}
