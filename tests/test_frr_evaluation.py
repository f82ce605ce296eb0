"""Face retouching reversal, measured (sgpn.retouch.evaluation): the rows, the identity-shape error,
the VGG similarity and what is unavailable; on untrained micro stages (the plumbing), and on the
kit's committed stages (the story notebook 10 tells)."""

from __future__ import annotations

import pytest
import torch

from sgpn.checkpoints import load
from sgpn.evaluation.perceptual import VGG_FILE, VGGSimilarity, WeightsUnavailable, build_vgg_similarity
from sgpn.face3d.face_model import load_face_model
from sgpn.images import to_image, to_network
from sgpn.nets.fmar import resize
from sgpn.nets.shape_prior import build_shape_prior
from sgpn.paths import KIT_CHECKPOINTS
from sgpn.retouch.evaluation import (CLIP_UNAVAILABLE, FRR_CHECKPOINTS, FRR_ROWS, frr_evaluation, frr_limits,
                                     frr_outputs, frr_test_set, identity_error, load_kit_frr,
                                     where_frr_loses)
from sgpn.training import FRRModule

MICRO = {"fmar": {"channels": (16, 32), "layers": 1, "attention_at": None},
         "hfdg": {"channels": 8, "groups": 1, "depth": 2, "heads": 2},
         "unet": {"channels": (16, 32), "layers": 1, "attention_at": None}}


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    prior = build_shape_prior(load_face_model(), {"backbone": "resnet18_2stages", "input_size": 32}, "resize").eval()
    with torch.no_grad():  # heads that read the image: identity coefficients differ between faces
        for head in prior.regressor.final_layers:
            head.weight.normal_(0, 0.05)
    return prior


@pytest.fixture(scope="module")
def pairs():
    return frr_test_set(num_images=4, size=32)


def test_the_test_set_is_fixed_held_out_pairs(pairs):
    again = frr_test_set(num_images=4, size=32)
    assert pairs["lq"].shape == pairs["hq"].shape == (4, 3, 32, 32)
    assert torch.equal(again["lq"], pairs["lq"]) and not torch.equal(pairs["lq"], pairs["hq"])


def test_identity_error_is_zero_for_the_same_face_only(teacher, pairs):
    same = identity_error(teacher, pairs["hq"], pairs["hq"])
    other = identity_error(teacher, pairs["hq"], pairs["hq"].flip(0))
    assert same.shape == (4,) and same.abs().max() < 1e-6 and (other[:2] > 0).all()
    with pytest.raises(ValueError, match="differ in shape"):
        identity_error(teacher, pairs["hq"], pairs["hq"][:2])


def test_vgg_similarity_compares_features_and_names_its_file(tmp_path, monkeypatch):
    similarity = VGGSimilarity(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    image = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(similarity(image, image), torch.ones(2))
    assert similarity(image, 1 - image).max() < 1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SGPN_VGG_WEIGHTS", raising=False)
    with pytest.raises(WeightsUnavailable, match=VGG_FILE):
        build_vgg_similarity()
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="VGG-16"):
        build_vgg_similarity(wrong)
    with pytest.raises(FileNotFoundError):
        build_vgg_similarity(tmp_path / "missing.pth")


def test_rows_of_micro_stages(teacher, pairs, tmp_path, monkeypatch):
    torch.manual_seed(0)
    stages = {stage: FRRModule(stage, size=32, low_size=16, network=MICRO[stage]).eval() for stage in MICRO}
    outputs, seconds = frr_outputs(stages, pairs["lq"], steps=2, batch_size=3)
    assert list(outputs) == list(FRR_ROWS) and seconds > 0
    assert all(faces.shape == pairs["lq"].shape for faces in outputs.values())
    torch.testing.assert_close(outputs["unet"], pairs["lq"])  # an untrained baseline passes the face through
    # an untrained HFDG adds the retouched face's details above FMAR's 16 px to FMAR's face
    retouched = to_network(pairs["lq"])
    details = retouched - resize(resize(retouched, 16), 32)
    torch.testing.assert_close(outputs["fmar_hfdg"], to_image(to_network(outputs["fmar"]) + details))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    evaluation = frr_evaluation(outputs, pairs["hq"], teacher, fid=False)
    assert [row.method for row in evaluation.rows] == list(FRR_ROWS.values())
    retouched = evaluation.result("retouch", "retouched input", "id_error")
    assert retouched.value > 0 and evaluation.value("retouch", "U-Net (L1)", "psnr") == pytest.approx(
        evaluation.value("retouch", "retouched input", "psnr"), abs=1e-4)
    table = evaluation.markdown()
    assert "retouching reversal" in table and VGG_FILE in table and CLIP_UNAVAILABLE.split("(")[1][:20] in table
    with pytest.raises(ValueError, match="faces for"):
        frr_evaluation({"unet": outputs["unet"][:2]}, pairs["hq"], teacher, fid=False)


def test_the_limits_of_untrained_micro_stages_are_their_inputs(pairs):
    """Untrained, HFDG adds the retouched details to whatever coarse face it is given and the
    U-Net passes the face through: each row of the limits is then a known image."""
    torch.manual_seed(0)
    stages = {stage: FRRModule(stage, size=32, low_size=16, network=MICRO[stage]).eval() for stage in MICRO}
    full, low = frr_limits(stages, pairs, samples=2, steps=2)
    assert all(values.shape == (4,) and values.isfinite().all() for values in (*full.values(), *low.values()))
    # equal but where HFDG clamps the upsampled coarse face to [-1, 1]
    torch.testing.assert_close(full["HFDG on the raw face at 16 px"],
                               full["that + the retouched face's details (no network)"], atol=0.05, rtol=0)
    torch.testing.assert_close(full["U-Net (L1)"], full["retouched input"])
    torch.testing.assert_close(full["that + the U-Net's details above 16 px"],
                               full["that + the retouched face's details (no network)"])
    # the U-Net's face at 16 px is the retouched one: HFDG puts its details back
    torch.testing.assert_close(full["HFDG on the U-Net's face brought down to 16 px"], full["retouched input"],
                               atol=0.05, rtol=0)
    torch.testing.assert_close(low["U-Net (L1) brought down to 16 px"], low["retouched input"])
    assert not torch.equal(low["FMAR's sample (2 DDIM steps)"], low["mean of 2 FMAR samples"])
    one, _ = frr_limits(stages, pairs, samples=1, steps=2)
    torch.testing.assert_close(one["FMAR + HFDG, mean of 1 FMAR samples"], full["FMAR + HFDG, one FMAR sample"])


def test_where_frr_loses_pairs_its_differences(pairs):
    """The three halves of notebook 10's story, each difference taken image by image."""
    torch.manual_seed(0)
    stages = {stage: FRRModule(stage, size=32, low_size=16, network=MICRO[stage]).eval() for stage in MICRO}
    story = where_frr_loses(stages, pairs, steps=2)
    assert list(story) == ["details above 16 px on the raw face brought down", "the face at 16 px", "at 32 px"]
    details, _, together = story.values()
    assert details["the U-Net's − HFDG's"].value == pytest.approx(details["the U-Net's"].value - details["HFDG's"].value)
    gap = together["the U-Net − HFDG on its face"]
    assert gap.value == pytest.approx(together["the U-Net"].value - together["HFDG on the U-Net's 16 px face"].value)


def test_a_missing_stage_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="frr_fmar"):
        load(tmp_path / "frr_fmar_tiny.ckpt")


KIT_HAS_FRR = all((KIT_CHECKPOINTS / name).is_file() for name in FRR_CHECKPOINTS.values())


@pytest.mark.skipif(not KIT_HAS_FRR, reason="the kit's FRR checkpoints are not built (make frr)")
def test_the_kit_stages_undo_retouching():
    """On 32 held-out pairs: FMAR + HFDG is closer to the raw face than the retouched input is,
    and HFDG adds to FMAR's upsampled face (PSNR)."""
    from sgpn.evaluation.metrics import pixel_metrics

    stages = load_kit_frr()
    pairs = frr_test_set(num_images=32, size=stages["fmar"].size)
    outputs, _ = frr_outputs(stages, pairs["lq"], steps=10)
    psnr = {key: pixel_metrics()[0](faces, pairs["hq"]).item() for key, faces in outputs.items()}
    assert psnr["fmar_hfdg"] > psnr["retouched"] + 0.5 and psnr["fmar_hfdg"] > psnr["fmar"] + 1, psnr


def test_a_stage_exports_compact_and_loads(tmp_path):
    import lightning as L

    from sgpn.training.export import export_checkpoint

    torch.manual_seed(0)
    module = FRRModule("unet", size=32, low_size=16, network=MICRO["unet"])
    with torch.no_grad():
        module.net.unet.conv_out.weight.normal_(0, 0.1)  # an output that depends on the weights
    saved = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__}, saved)
    compact = export_checkpoint(saved, tmp_path / "frr_unet.ckpt", compact=True)
    assert compact.stat().st_size < 0.6 * saved.stat().st_size
    loaded = load(compact)
    assert loaded.stage == "unet" and next(loaded.parameters()).dtype == torch.float32
    face = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.net(face), module.eval().net(face), rtol=0.01, atol=0.01)
