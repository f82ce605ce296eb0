"""One loader for every checkpoint: the kit's files, full checkpoints written before the package
moved into subpackages, the release's folder, and files that are none of these."""

from pathlib import Path

import pytest
import torch
from test_restore import write_official_folder

import sgpn
from sgpn.nets.frr_stage import FRRStage
from sgpn.nets.generator import SGPNGenerator
from sgpn.nets.restorer import SGPNRestorer
from sgpn.nets.shape_prior import ShapePrior
from sgpn.paths import KIT_CHECKPOINTS

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
KINDS = {"sgpn_": SGPNRestorer, "teacher_": ShapePrior, "regressor_": ShapePrior, "frr_": FRRStage}


@pytest.mark.parametrize("path", sorted(KIT_CHECKPOINTS.glob("*.ckpt")), ids=lambda p: p.name)
def test_every_kit_checkpoint_loads_in_eval_mode(path):
    module = sgpn.load(path)
    expected = next(kind for prefix, kind in KINDS.items() if path.name.startswith(prefix))
    assert isinstance(module, expected) and not module.training
    assert next(module.parameters()).dtype == torch.float32  # float16 files are copied into float32


def test_full_checkpoints_written_before_the_move_load_and_restore_as_they_did():
    """Lightning checkpoints written by the flat layout (class paths sgpn.training.SGPNModule,
    sgpn.training.TeacherModule and sgpn.frr.FRRModule, every module's weights, loops and
    callbacks; optimiser states left out and weights stored as float16 to keep the fixture
    small), with what that code computed from them."""
    expected = torch.load(LEGACY / "expected.pt", weights_only=True)
    lq = expected["input"]
    class_paths = {name: torch.load(LEGACY / name, weights_only=True)["hyper_parameters"]["_class_path"]
                   for name in ("sgpn_module.ckpt", "teacher_module.ckpt", "frr_module.ckpt")}
    assert class_paths == {"sgpn_module.ckpt": "sgpn.training.SGPNModule",
                           "teacher_module.ckpt": "sgpn.training.TeacherModule",
                           "frr_module.ckpt": "sgpn.frr.FRRModule"}
    restored = sgpn.load(LEGACY / "sgpn_module.ckpt").restore(lq)
    torch.testing.assert_close(restored.output, expected["sgpn_output"])
    torch.testing.assert_close(restored.i3d, expected["sgpn_i3d"])
    teacher = sgpn.load(LEGACY / "teacher_module.ckpt")
    with torch.no_grad():
        coeffs = teacher.regressor(teacher.to_regressor_frame(lq * 2 - 1))
    torch.testing.assert_close(coeffs, expected["teacher_coeffs"])
    stage = sgpn.load(LEGACY / "frr_module.ckpt")
    torch.testing.assert_close(stage.output({"retouched": lq, "raw": lq}), expected["frr_output"])


def test_the_release_folder_loads_as_its_restorer(tmp_path):
    files = write_official_folder(tmp_path)
    torch.save(SGPNGenerator("paper").state_dict(), files["generator"])  # the release's 512 generator
    restorer = sgpn.load(tmp_path)
    assert isinstance(restorer, SGPNRestorer) and restorer.size == 512 and not restorer.training


def test_files_that_are_no_checkpoint_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        sgpn.load(tmp_path / "absent.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        sgpn.load(tmp_path / "garbage.ckpt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds a Tensor, not a checkpoint"):
        sgpn.load(tmp_path / "tensor.pt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {"_class_path": "x.Model"}},
               tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"not a kit SGPN, teacher or retouching-reversal checkpoint "
                                         r"\(class x.Model, keys: encoder.weight\)"):
        sgpn.load(tmp_path / "other.ckpt")
    files = write_official_folder(tmp_path / "release")
    with pytest.raises(ValueError, match="loads with its folder"):
        sgpn.load(files["generator"])
    with pytest.raises(ValueError, match="CoefficientRegressor.from_checkpoint"):
        sgpn.load(files["regressor"])
