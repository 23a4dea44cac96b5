"""Importing the fusion pieces that need no registration does not load SimpleITK or ITK (large native libraries):
the 2D pair path and the slice-wise fusion stage run where those are not installed (e.g. a bare GPU machine)."""

import subprocess
import sys

BLOCK_NATIVE_IMAGING = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("SimpleITK", "itk"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_NATIVE_IMAGING + code], capture_output=True, text=True,
                          timeout=120)


def test_pair_and_slice_fusion_import_without_simpleitk():
    proc = _run(
        "from fusionmamba_med.inference import PairFusionRunner, StudyFusionRunner\n"
        "from fusionmamba_med.transforms import Colormapd, PercentileNormalized, rgb_to_ycbcr\n"
        "from fusionmamba_med.networks import build_fusionmamba\n"
        "import fusionmamba_med.transforms.pairs, fusionmamba_med.io.pairs\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_registration_still_needs_simpleitk():
    """The block works: registration, which does need SimpleITK, fails to import under it."""
    proc = _run("from fusionmamba_med.transforms import RegisterToFixedd\n")
    assert proc.returncode != 0 and "SimpleITK is blocked" in proc.stderr
