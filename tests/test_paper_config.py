"""``configs/paper.yaml`` runs as the README says, on the CPU: ``sgpn prepare`` makes the folder,
``sgpn fit`` trains the 512 px network with a teacher in D3DFR's published layout, ``--ckpt_path
last`` resumes, ``sgpn test`` and ``sgpn export`` run on the result and ``sgpn restore`` uses the
exported file. Only the device, the batch, the iteration count, the folder and the teacher are
given on the command line. Not shortened by ``SGPN_FAST``: about four minutes on 2 cores."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import write_portraits
from PIL import Image

from sgpn.nets.regressor import CoefficientRegressor
from sgpn.paths import CONFIGS

ON_THIS_MACHINE = ["--config", str(CONFIGS / "paper.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                   "--data.init_args.batch_size", "1"]


def sgpn(folder, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sgpn.cli", *args], cwd=folder, capture_output=True, text=True,
                          timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"sgpn {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def saved(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Five portrait photos prepared into train/val/test, and a random-weight D3DFR teacher saved
    as Deep3DFaceRecon saves it (``{"net_recon": state_dict}``)."""
    folder = tmp_path_factory.mktemp("paper")
    write_portraits(folder / "raw")
    torch.manual_seed(0)
    torch.save({"net_recon": CoefficientRegressor().state_dict()}, folder / "epoch_20.pth")
    printed = sgpn(folder, "prepare", "raw", "faces", "--val", "0.25", "--test", "0.25")
    assert "the folder holds 3 train, 1 val, 1 test" in printed
    return folder


def test_paper_config_fits_resumes_tests_exports_and_restores(work):
    data = ["--data.init_args.source", "faces", "--model.init_args.teacher_ckpt", "epoch_20.pth"]
    last = work / "runs" / "paper" / "checkpoints" / "last.ckpt"
    sgpn(work, "fit", *ON_THIS_MACHINE, *data, "--trainer.max_steps", "4")  # 2 iterations (G and D steps)
    first = saved(last)
    assert first["global_step"] == 4 and first["hyper_parameters"]["generator"] == "paper"
    bias = first["state_dict"]["generator.netG.to_rgb1.bias"].clone()

    printed = sgpn(work, "fit", *ON_THIS_MACHINE, *data, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert "Restoring states from the checkpoint path" in printed
    resumed = saved(last)
    assert resumed["global_step"] == 6 and not torch.equal(resumed["state_dict"]["generator.netG.to_rgb1.bias"], bias)

    printed = sgpn(work, "test", *ON_THIS_MACHINE, *data, "--ckpt_path", "last")
    assert "test/psnr" in printed and "test/ssim" in printed

    sgpn(work, "export", str(last), "paper.ckpt")
    printed = sgpn(work, "restore", "--ckpt", "paper.ckpt", "raw/portrait_0.jpg", "restored")
    assert "1 photo(s) restored" in printed
    with Image.open(work / "raw" / "portrait_0.jpg") as photo, Image.open(work / "restored" / "portrait_0.png") as result:
        assert result.size == photo.size


def test_paper_config_trains_in_bf16(work):
    """``--trainer.precision bf16-mixed`` (autocast) through the 512 generator and the shape prior;
    the weights stay float32."""
    (work / "bf16").mkdir()
    printed = sgpn(work / "bf16", "fit", *ON_THIS_MACHINE, "--data.init_args.source", "../faces",
                   "--model.init_args.teacher_ckpt", "../epoch_20.pth", "--trainer.precision", "bf16-mixed",
                   "--trainer.max_steps", "2")
    assert "bfloat16 Automatic Mixed Precision" in printed
    checkpoint = saved(work / "bf16" / "runs" / "paper" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2
    weights = [v for k, v in checkpoint["state_dict"].items() if k.startswith(("generator.", "shape_prior."))
               and v.is_floating_point()]
    assert {v.dtype for v in weights} == {torch.float32} and all(torch.isfinite(v).all() for v in weights)


def test_a_teacher_in_another_layout_is_named_with_the_keys_expected_and_found(tmp_path):
    from sgpn.checkpoints import load_regressor_weights

    weights = {f"module.{k}": v for k, v in CoefficientRegressor().state_dict().items()}  # saved from DataParallel
    torch.save({"net_recon": weights}, tmp_path / "wrapped.pth")
    with pytest.raises(KeyError, match=r"expected backbone\.conv1\.weight.*found module\.backbone\.conv1\.weight"):
        load_regressor_weights(CoefficientRegressor(), tmp_path / "wrapped.pth")
    torch.save({"model": CoefficientRegressor().state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"no tensors at the top level or under \['net_recon'.*its keys are model"):
        load_regressor_weights(CoefficientRegressor(), tmp_path / "other.pth")
