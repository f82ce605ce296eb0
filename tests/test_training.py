"""Training: losses, the Lightning CLI on a 32 px micro configuration, resume, DDP, restore,
and the kit's committed checkpoints."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sgpn.checkpoints import load, training_minutes
from sgpn.cli import main
from sgpn.evaluation.metrics import vertex_error
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import load_face_model
from sgpn.images import batch_images
from sgpn.nets.regressor import CoefficientRegressor
from sgpn.nets.shape_prior import ShapePrior, crop_to_d3dfr_matrix, crop_to_frame_matrix
from sgpn.paths import KIT_ROOT
from sgpn.training import SGPNModule, TeacherModule
from sgpn.training.callbacks import TrainingBudget
from sgpn.training.export import export_checkpoint
from sgpn.training.losses import MeshLoss, resolve_perceptual, vgg16_weights_file
from sgpn.training.profiling import profile_iterations

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
KIT = ROOT / "kit_checkpoints"


@pytest.fixture(scope="module")
def face_model():
    return load_face_model()


# -- losses and geometry ------------------------------------------------------------------------


def test_landmarks_3d_match_the_full_face_model(face_model):
    coeffs = face_model.random_coefficients(3, generator=torch.Generator().manual_seed(0))
    coeffs[:, coefficients.SLICES["trans"]] = torch.tensor([0.1, -0.05, 0.3])
    torch.testing.assert_close(face_model.landmarks_3d(coeffs), face_model(coeffs).landmarks_3d,
                               rtol=1e-5, atol=1e-5)


def test_mesh_loss_is_the_mean_over_all_vertices(face_model):
    generator = torch.Generator().manual_seed(1)
    a, b = (face_model.random_coefficients(2, generator=generator) for _ in range(2))
    fa, fb = face_model(a), face_model(b)
    loss = MeshLoss(face_model)
    torch.testing.assert_close(loss.shape(a, b), (fa.shape - fb.shape).pow(2).sum(-1).mean(), rtol=1e-3, atol=1e-7)
    colour = (fa.colors - fb.colors).pow(2).sum(-1).mean()
    torch.testing.assert_close(loss(a, fa.colors, b, fb.colors), loss.shape(a, b) + colour)
    assert loss.shape(a, b) > 0 and colour > 0 and loss(a, fa.colors, a, fa.colors) == 0


def test_mask_convolutions_can_learn_faster():
    """mask_lr_scale gives exactly AFFB's mask convolutions their own rate; at 1 the generator
    keeps one group, as checkpoints saved before the option expect."""
    scaled = SGPNModule(generator="tiny", mesh_losses=False, lr=1e-3, mask_lr_scale=10)
    generator_group, mask_group = scaled.configure_optimizers()[0].param_groups[:2]
    masks = {id(p) for name, p in scaled.generator.named_parameters() if ".convs_mask." in name}
    assert masks and {id(p) for p in mask_group["params"]} == masks and mask_group["lr"] == pytest.approx(1e-2)
    assert len(generator_group["params"]) + len(masks) == len(list(scaled.generator.parameters()))
    plain = SGPNModule(generator="tiny", mesh_losses=False, lr=1e-3)
    groups = plain.configure_optimizers()[0].param_groups
    assert len(groups[0]["params"]) == len(list(plain.generator.parameters())) and groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="mask_lr_scale must be positive"):
        SGPNModule(generator="tiny", mesh_losses=False, mask_lr_scale=0)


def test_small_regressor_and_its_frame():
    regressor = CoefficientRegressor(backbone="resnet18_2stages", input_size=64).eval()
    with torch.no_grad():
        assert torch.equal(regressor(torch.rand(2, 3, 64, 64)), torch.zeros(2, 257))
    with pytest.raises(ValueError, match="works at 64 x 64 px"):
        regressor(torch.rand(1, 3, 224, 224))
    with pytest.raises(ValueError, match="unknown regressor backbone 'vgg'"):
        CoefficientRegressor(backbone="vgg")
    # D3DFR's frame drawn at 112 is the 224 frame scaled (pixel centres at integers)
    full, half = crop_to_d3dfr_matrix(512), crop_to_frame_matrix(512, 112)
    point = torch.tensor([200.0, 300.0])
    at_224 = full[:, :2] @ point + full[:, 2]
    torch.testing.assert_close(half[:, :2] @ point + half[:, 2], (at_224 + 0.5) / 2 - 0.5)
    # a marked pixel lands where points_to_frame says
    prior = ShapePrior(regressor=CoefficientRegressor("resnet18_2stages", 112), alignment="template")
    image = torch.zeros(1, 1, 128, 128)
    image[0, 0, 70, 50] = 1
    warped = prior.warp_to_frame(image)[0, 0]
    peak = divmod(int(warped.argmax()), warped.shape[-1])
    expected = prior.points_to_frame(torch.tensor([50.0, 70.0]), 128)
    assert abs(peak[1] - expected[0]) <= 1 and abs(peak[0] - expected[1]) <= 1


def test_bad_inputs_get_clear_errors(tmp_path):
    good = torch.rand(2, 3, 32, 32)
    with pytest.raises(KeyError, match="no 'lq' images"):
        batch_images({"hq": good}, "lq")
    with pytest.raises(ValueError, match="works at 64 x 64 px"):
        batch_images({"hq": good}, "hq", 64)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        batch_images({"hq": good * 2 - 1}, "hq")
    with pytest.raises(ValueError, match="NaN"):
        batch_images({"hq": torch.full_like(good, float("nan"))}, "hq")
    with pytest.raises(ValueError, match="need a frozen teacher"):
        SGPNModule(generator="tiny", teacher_ckpt=None)
    with pytest.raises(ValueError, match="perceptual must be one of"):
        SGPNModule(generator="tiny", mesh_losses=False, perceptual="lpips")
    with pytest.raises(ValueError, match="lr_decay must be"):
        SGPNModule(generator="tiny", mesh_losses=False, lr_decay="linear")
    if vgg16_weights_file() is None:
        assert resolve_perceptual("auto") == "feature_matching"
        with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
            resolve_perceptual("vgg16")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.ckpt")


# -- the Lightning CLI on the micro configuration -----------------------------------------------


def fit(workdir: Path, config: str, *overrides: str) -> None:
    """``sgpn fit --config tests/configs/CONFIG`` in ``workdir``."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        main(["fit", "--config", str(CONFIGS / config), *overrides])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("teacher")
    fit(workdir, "micro_teacher.yaml")
    return workdir / "runs" / "micro_teacher" / "checkpoints" / "last.ckpt"


def sgpn_weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.split(".")[0] in ("generator", "discriminator", "shape_prior")}


class StopMidEpoch(L.Callback):
    """Simulates a crash: raises after ``batches`` batches of epoch ``epoch``."""

    def __init__(self, epoch: int, batches: int):
        self.epoch, self.batches = epoch, batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx + 1 == self.batches:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, micro_teacher) -> Path:
    """An uninterrupted micro SGPN run (3 epochs of 3 steps)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    fit(workdir, "micro_sgpn.yaml", "--model.init_args.teacher_ckpt", str(micro_teacher))
    return workdir


def test_teacher_fit_writes_a_loadable_checkpoint(micro_teacher, tmp_path):
    teacher = TeacherModule.load_from_checkpoint(micro_teacher, weights_only=True)
    assert teacher.prior.regressor.input_size == 32
    state = torch.load(micro_teacher, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("face_model.") for k in state)  # rebuilt, not stored
    exported = export_checkpoint(micro_teacher, tmp_path / "teacher.ckpt")
    minutes = training_minutes(exported)  # the TrainingBudget callback's clock survives the export
    assert minutes is not None and 0 < minutes < 5
    prior = load(exported)
    torch.testing.assert_close(prior.regressor.state_dict(), teacher.prior.regressor.state_dict())


def test_bench_shape_measures_the_teacher_and_the_lq_regressor(micro_teacher, tmp_path):
    from sgpn.bench import bench_shape
    from sgpn.evaluation.shape_accuracy import BENCH_GROUPS, ROW_TITLES

    exported = export_checkpoint(micro_teacher, tmp_path / "teacher.ckpt")
    result = bench_shape(str(exported), str(exported), num_images=8)
    assert result["images"] == 8 and list(result["rows"]) == list(ROW_TITLES)
    for row in result["rows"].values():
        assert set(row) == {"vertex_error", "nme", "pose_error_deg", "r2"} and set(row["r2"]) == set(BENCH_GROUPS)
        assert all(math.isfinite(v) for v in (row["vertex_error"], row["nme"], row["pose_error_deg"]))
    assert result["rows"]["teacher_lq"] == result["rows"]["regressor_lq"]  # one network, the same LQ faces
    assert result["rows"]["mean_face"]["r2"]["id10"] <= 0  # all-zero guesses explain nothing
    assert 0 <= result["minutes"]["teacher"] < 5  # recorded by the TrainingBudget callback (rounded)


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found.*make checkpoints"):
        load(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="not a kit SGPN, teacher or retouching-reversal checkpoint"):
        load(tmp_path / "bare.ckpt")


def test_training_budget_rejects_a_non_positive_budget():
    with pytest.raises(ValueError, match="positive number of minutes"):
        TrainingBudget(0)


def test_fit_logs_losses_grids_and_a_checkpoint(micro_run):
    rows = list(csv.DictReader(open(micro_run / "runs" / "micro" / "version_0" / "metrics.csv")))
    trained = [r for r in rows if r["train/g_total"]]
    assert len(trained) == 9
    for key in ("train/l1", "train/adv", "train/feature_matching", "train/3dlm", "train/mesh", "train/d_loss"):
        assert all(math.isfinite(float(r[key])) for r in trained), key
    assert any(r["train/r1"] for r in trained)
    scores = [r for r in rows if r["val/psnr"]]
    assert len(scores) == 3 and all(float(r["val/psnr_lq"]) > 10 for r in scores)
    images = sorted((micro_run / "runs" / "micro" / "version_0" / "images").glob("*.png"))
    assert {p.name.split("_")[1] for p in images} == {"grid.png", "masks.png"}
    grid = Image.open([p for p in images if p.name.endswith("_grid.png")][-1])
    assert grid.width > 2 * 32 and grid.height >= 4 * 32  # LQ / I_3d / output / GT rows
    # lr_decay: cosine, over the 9 iterations of 3 epochs x 3 batches: both rates end at 0
    saved = torch.load(micro_run / "runs" / "micro" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert [s["T_max"] for s in saved["lr_schedulers"]] == [9, 9]
    assert all(s["last_epoch"] == 9 and max(s["_last_lr"]) < 1e-9 for s in saved["lr_schedulers"])



def test_the_notebook_pictures_of_a_run_show_its_log_and_its_preview(tmp_path):
    """Notebook 06's pictures: the CSV log's curves, and a module's preview with its AFFB masks."""
    from sgpn.app.visualize import plot_training_log, preview_figure

    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/l1,train/adv,train/d_loss,val/psnr,val/psnr_lq,val/ssim,val/ssim_lq\n"
                   "0,10,2.0,0.7,1.3,,,,\n0,20,,,,21.0,20.5,0.6,0.55\n")
    curves = plot_training_log(log)
    assert [[line.get_label() for line in ax.lines] for ax in curves.axes] == [
        ["L1", "L_adv"], ["D loss"], ["output", "LQ input"], ["output", "LQ input"]]
    preview = {"rows": {name: torch.rand(2, 3, 8, 8) for name in ("LQ", "I_3d", "output", "GT")},
               "masks": {"M 16px": torch.rand(2, 1, 4, 4)}}
    grid = preview_figure(preview)
    assert [ax.get_ylabel() for ax in grid.axes[::2][:5]] == ["LQ", "I_3d", "output", "GT", "M 16px"]
    assert "1 takes F_lq" in grid.axes[-1].get_ylabel()  # the masks' colour bar

def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, micro_teacher, micro_run):
    """Crash in the middle of the last epoch, resume from last.ckpt (written mid-epoch, every
    2 optimiser steps = 1 batch): the final weights match the uninterrupted run's."""
    from sgpn.cli import lightning_cli

    teacher = ["--model.init_args.teacher_ckpt", str(micro_teacher)]
    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(["--config", str(CONFIGS / "micro_sgpn.yaml"), *teacher], run=False)
    cli.trainer.callbacks.insert(0, StopMidEpoch(epoch=2, batches=3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    checkpoint = tmp_path / "runs" / "micro" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2 and saved["global_step"] == 16  # 2 of the epoch's 3 batches done
    at_crash = sgpn_weights(checkpoint)

    main(["fit", "--config", str(CONFIGS / "micro_sgpn.yaml"), *teacher, "--ckpt_path", "last"])
    resumed = sgpn_weights(checkpoint)
    uninterrupted = sgpn_weights(micro_run / "runs" / "micro" / "checkpoints" / "last.ckpt")
    assert resumed.keys() == uninterrupted.keys()
    assert not torch.equal(at_crash["generator.netG.to_rgb1.bias"], uninterrupted["generator.netG.to_rgb1.bias"])
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_two_cpu_processes(tmp_path, micro_teacher):
    """A few steps with Lightning's DDP on 2 CPU processes (gloo), with the paper config's
    strategy: finite losses, and one checkpoint, written by rank 0."""
    strategy = yaml.safe_load((KIT_ROOT / "configs" / "paper.yaml").read_text())["trainer"]["strategy"]
    command = [sys.executable, "-m", "sgpn.cli", "fit", "--config", str(CONFIGS / "micro_sgpn.yaml"),
               "--model.init_args.teacher_ckpt", str(micro_teacher), "--trainer.devices", "2",
               "--trainer.strategy", strategy, "--trainer.max_epochs", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    rows = list(csv.DictReader(open(tmp_path / "runs" / "micro" / "version_0" / "metrics.csv")))
    trained = [r for r in rows if r["train/g_total"]]
    assert len(trained) == 2  # 12 faces, 2 ranks x batch 4, 2 epochs: one step per epoch
    assert all(math.isfinite(float(r[k])) for r in trained for k in ("train/g_total", "train/d_total"))
    assert [p.name for p in (tmp_path / "runs" / "micro" / "checkpoints").iterdir()] == ["last.ckpt"]
    assert torch.load(tmp_path / "runs" / "micro" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)["global_step"] == 4


def test_restore_and_export(tmp_path, micro_teacher, micro_run, capsys):
    checkpoint = micro_run / "runs" / "micro" / "checkpoints" / "last.ckpt"
    small = export_checkpoint(checkpoint, tmp_path / "small.ckpt")
    assert small.stat().st_size < checkpoint.stat().st_size
    full, exported = load(checkpoint), load(small)
    for name, value in full.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name
    assert isinstance(load(micro_teacher), ShapePrior)  # the one loader tells the kinds apart

    faces = tmp_path / "faces"
    (faces / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(faces / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(faces / "sub" / "b.png")
    (faces / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped unreadable image .*broken.png"):
        assert main(["restore", "--aligned", "--ckpt", str(small), str(faces), str(tmp_path / "out")]) == 0
    assert "2 restored faces" in capsys.readouterr().out
    outputs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert outputs == ["a.png", "sub/b.png"]
    restored = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert restored.shape == (32, 32, 3) and restored.std() > 0
    with pytest.raises(FileNotFoundError, match="input not found"):
        main(["restore", "--aligned", "--ckpt", str(small), str(tmp_path / "absent"), str(tmp_path / "out2")])


def test_compact_export_keeps_what_restoring_needs(tmp_path, micro_run):
    checkpoint = micro_run / "runs" / "micro" / "checkpoints" / "last.ckpt"
    compact = export_checkpoint(checkpoint, tmp_path / "compact.ckpt", compact=True)
    full, loaded = load(checkpoint), load(compact)
    assert compact.stat().st_size < 0.4 * export_checkpoint(checkpoint, tmp_path / "plain.ckpt").stat().st_size
    for name, value in full.state_dict().items():
        if name.startswith("discriminator."):
            continue
        exact = name.startswith("teacher.") or not value.is_floating_point()
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0 if exact else 1e-3,
                                   atol=0 if exact else 1e-3, msg=name)
    lq = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.restore(lq).output, full.restore(lq).output, rtol=0.02, atol=0.02)
    data = torch.load(compact, weights_only=True)
    data["state_dict"].pop(next(k for k in data["state_dict"] if k.startswith("generator.")))
    torch.save(data, tmp_path / "broken.ckpt")
    with pytest.raises(KeyError, match="missing"):
        load(tmp_path / "broken.ckpt")


def test_test_subcommand_reports_scores(tmp_path, micro_teacher, micro_run, capsys):
    checkpoint = micro_run / "runs" / "micro" / "checkpoints" / "last.ckpt"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        main(["test", "--config", str(CONFIGS / "micro_sgpn.yaml"), "--model.init_args.teacher_ckpt",
              str(micro_teacher), "--ckpt_path", str(checkpoint)])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "test/psnr" in out and "test/ssim_lq" in out


# -- the kit's own checkpoints ------------------------------------------------------------------


@pytest.mark.skipif(not (KIT / "sgpn_tiny.ckpt").is_file(), reason="kit checkpoints absent (make checkpoints)")
def test_kit_checkpoints_load_and_restore():
    from sgpn.data.datamodule import FaceDataModule
    from sgpn.evaluation.kit_models import LADDER, TASK_MODELS, VARIANTS, load_kit
    from sgpn.retouch.evaluation import FRR_CHECKPOINTS

    sizes = {p.name: p.stat().st_size for p in KIT.glob("*.ckpt")}
    task_files = [file for _, file in TASK_MODELS.values()]
    assert set(sizes) == {"teacher_tiny.ckpt", "regressor_lq_tiny.ckpt", *VARIANTS.values(), *task_files,
                          *FRR_CHECKPOINTS.values(), *LADDER.values()}
    assert sum(sizes[name] for name in FRR_CHECKPOINTS.values()) <= 8 * 2**20  # compact float16 stages
    assert sizes["teacher_tiny.ckpt"] + sizes["regressor_lq_tiny.ckpt"] + sizes["sgpn_tiny.ckpt"] <= 20 * 2**20
    assert sum(sizes.values()) <= 40 * 2**20
    teacher = TeacherModule.load_from_checkpoint(KIT / "teacher_tiny.ckpt", weights_only=True).eval()
    module = load(KIT / "sgpn_tiny.ckpt")
    variants = {name: load_kit(name).hparams for name in [*VARIANTS, *TASK_MODELS]}
    assert [(h["fusion"], h["mesh_losses"]) for h in variants.values()] == [
        ("affb", True), ("lq_only", True), ("sum", True), ("affb", False), ("affb", True)]
    assert module.size == 64
    data = FaceDataModule(size=64, batch_size=4, train_length=0, val_length=4, test_length=4,
                          degradation_kwargs={"reference_size": 512})
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    restored = module.restore(batch["lq"])
    assert restored.output.shape == (4, 3, 64, 64) and torch.isfinite(restored.output).all()
    error = (restored.output - batch["hq"]).abs().mean()
    torch.manual_seed(0)
    untrained = SGPNModule(**{k: v for k, v in module.hparams.items() if not k.startswith("_")}).eval()
    assert error < 0.5 * (untrained.restore(batch["lq"]).output - batch["hq"]).abs().mean()  # it was trained
    assert error < 1.2 * (batch["lq"] - batch["hq"]).abs().mean()  # about as close as its input
    with torch.no_grad():
        coeffs = teacher.predict_coefficients(batch["hq"])
    assert vertex_error(teacher.face_model, coeffs, batch["coeffs"]).mean() < vertex_error(
        teacher.face_model, torch.zeros_like(coeffs), batch["coeffs"]).mean()  # better than the mean face


def test_the_teachers_targets_are_computed_once_per_face():
    """With cache_teacher_targets, the frozen teacher reads each training face once; the cached
    targets are the ones it computed, and without indices (or the switch) nothing is kept."""
    torch.manual_seed(0)
    module = SGPNModule(generator={"size": 32, "channels": {4: 16, 8: 16, 16: 8, 32: 8}, "encoder_style_dim": 32,
                                   "style_dim": 32},
                        regressor={"backbone": "resnet18_2stages", "input_size": 32}, teacher_ckpt="unused.ckpt").eval()
    calls = []
    module.teacher.regressor.register_forward_hook(lambda *_: calls.append(1))
    hq = torch.rand(4, 3, 32, 32) * 2 - 1
    batch = {"index": torch.tensor([3, 1, 4, 2]), "flipped": torch.tensor([False, False, True, False])}
    keys = module.target_keys(batch)
    assert keys == [(3, False), (1, False), (4, True), (2, False)]
    first = module.teacher_targets(hq, keys)
    again = module.teacher_targets(hq[[1, 0]], [keys[1], keys[0]])  # the same faces in another batch
    assert len(calls) == 1
    for part, cached in zip(first, again):
        assert torch.equal(cached, part[[1, 0]])
    module.teacher_targets(hq, None)
    assert len(calls) == 2 and len(module._teacher_targets) == 4
    module.hparams.cache_teacher_targets = False
    assert module.target_keys(batch) is None


def test_a_profiled_run_times_every_part_and_logs_every_loss(micro_teacher):
    timer = profile_iterations(Path(__file__).parent / "configs" / "micro_sgpn.yaml", 3,
                               teacher_ckpt=str(micro_teacher), train_length=8)
    assert len(timer.seconds) == len(timer.losses) == 3
    assert set(timer.losses[0]) == {"train/g_total", "train/d_total"}
    assert {"generator", "discriminator", "backward (D and G)"} <= set(timer.parts)
    assert all(seconds > 0 for seconds in timer.parts.values())
