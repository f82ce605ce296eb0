"""FRRffusion at kit scale: HFDG's attention (sgpn.nets.hfdg), FMAR and the U-Net baseline
(sgpn.nets.fmar), a stage and its LightningModule (sgpn.nets.frr_stage, sgpn.training.frr_module),
and the pair data module (sgpn.retouch.pairs)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sgpn.images import to_image, to_network
from sgpn.nets.fmar import FMAR, resize
from sgpn.nets.hfdg import HFDG, OverlappingCrossAttention, WindowAttention, relative_position_index
from sgpn.retouch.pairs import RetouchDataModule, RetouchedFaces
from sgpn.retouch.pipeline import FRRffusion
from sgpn.nets.frr_stage import STAGES
from sgpn.training import FRRModule

TINY = {"fmar": {"channels": (16, 32), "layers": 1, "attention_at": 8},
        "hfdg": {"channels": 16, "groups": 1, "depth": 2, "heads": 2},
        "unet": {"channels": (16, 32), "layers": 1, "attention_at": None}}


def pair_batch(size=32, batch=2):
    torch.manual_seed(0)
    return {"retouched": torch.rand(batch, 3, size, size), "raw": torch.rand(batch, 3, size, size)}


def test_relative_position_tables_are_covered():
    assert relative_position_index(4, 4).unique().numel() == 7 * 7
    outer = relative_position_index(4, 6)
    assert outer.shape == (16, 36) and outer.min() == 0 and outer.max() == 9 * 9 - 1


def test_shifted_windows_do_not_mix_opposite_borders():
    torch.manual_seed(0)
    attention = WindowAttention(8, window=4, heads=2, shift=2)
    x = torch.randn(1, 8, 8, 8)
    changed = x.clone()
    changed[0, -1, -1] += torch.randn(8)  # bottom-right pixel: after the shift it shares a window with the top-left
    out, out_changed = attention(x), attention(changed)
    assert torch.allclose(out[0, 0, 0], out_changed[0, 0, 0], atol=1e-6)
    assert not torch.allclose(out[0, -1, -2], out_changed[0, -1, -2])


def test_cross_attention_reaches_into_the_overlap_only():
    torch.manual_seed(0)
    cross = OverlappingCrossAttention(8, window=4, heads=2, overlap=0.5)  # key windows of 6: one pixel around
    x = torch.randn(1, 8, 8, 8)
    near, far = x.clone(), x.clone()
    near[0, 4, 1] += torch.randn(8)  # just below the top-left query window
    far[0, 7, 7] += torch.randn(8)
    out = cross(x)
    assert not torch.allclose(out[0, :4, :4], cross(near)[0, :4, :4])
    assert torch.allclose(out[0, :4, :4], cross(far)[0, :4, :4], atol=1e-6)


def test_hfdg_starts_as_the_coarse_face_with_the_retouched_details_and_checks_its_inputs():
    net = HFDG(**TINY["hfdg"])
    coarse, retouched, retouched_up = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(net(coarse, retouched, retouched_up), coarse + retouched - retouched_up)
    with pytest.raises(ValueError, match="multiples of the window"):
        net(*torch.rand(3, 1, 3, 12, 12))
    with pytest.raises(ValueError, match="one size"):
        net(coarse, retouched, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of heads"):
        HFDG(channels=10, heads=4)


@pytest.mark.parametrize("target", FMAR.TARGETS)
def test_fmar_samples_reproducibly_and_keeps_snapshots(target):
    fmar = FMAR(size=16, target=target, **TINY["fmar"])
    retouched = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = fmar.loss(retouched, retouched)
    loss.backward()
    assert torch.isfinite(loss)
    first, shots = fmar.sample(retouched, steps=4, generator=torch.Generator().manual_seed(1), keep=3)
    again, _ = fmar.sample(retouched, steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and first.shape == retouched.shape and first.abs().max() <= 1
    assert len(shots) == 3 and shots[0][0] > shots[-1][0]  # from noisy to clean
    with pytest.raises(ValueError, match="16 px"):
        fmar.sample(torch.zeros(1, 3, 8, 8))


def test_fmar_can_read_the_retouched_face_at_twice_its_size():
    fmar = FMAR(size=16, condition_scale=2, **TINY["fmar"])
    raw, retouched = torch.rand(16, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    low, condition = fmar.condition(retouched)
    torch.testing.assert_close(low, resize(retouched, 16))
    assert condition.shape == (2, 12, 16, 16) and torch.equal(F.pixel_shuffle(condition, 2), retouched)
    assert torch.isfinite(fmar.loss(raw[:2], retouched))
    sample, _ = fmar.sample(retouched, steps=2, generator=torch.Generator().manual_seed(0))
    assert sample.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="at 32 px"):
        fmar.loss(raw[:2], raw[:2])
    with pytest.raises(ValueError, match="condition_scale"):
        FMAR(size=16, condition_scale=0, **TINY["fmar"])
    with pytest.raises(ValueError, match="the faces are 32 px"):
        FRRModule("fmar", size=32, low_size=16, network={**TINY["fmar"], "condition_scale": 4})


def test_a_residual_fmar_diffuses_what_the_retouch_took_away():
    fmar = FMAR(size=16, target="residual", **TINY["fmar"])
    raw, retouched = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    clean = fmar.clean(raw, retouched)
    torch.testing.assert_close(clean, (raw - retouched) * FMAR.RESIDUAL_GAIN)
    torch.testing.assert_close(fmar.face(clean, retouched), raw)
    assert torch.equal(fmar.face(torch.zeros_like(raw), retouched), retouched)  # no residual: the retouched face
    assert torch.equal(FMAR(size=16, target="raw", **TINY["fmar"]).clean(raw, retouched), raw)
    with pytest.raises(ValueError, match="target must be one of"):
        FMAR(size=16, target="noise", **TINY["fmar"])


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_and_predicts(stage):
    module = FRRModule(stage=stage, size=32, low_size=16, network=TINY[stage], sample_steps=3)
    batch = pair_batch()
    loss = module.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    out = module.output(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch["raw"].shape and 0 <= out.min() and out.max() <= 1
    if stage == "unet":  # an untrained baseline passes the retouched face through
        torch.testing.assert_close(out, batch["retouched"])


def test_bad_batches_and_settings_are_named():
    module = FRRModule(stage="unet", size=32, low_size=16, network=TINY["unet"])
    with pytest.raises(KeyError, match="raw"):
        module.loss({"retouched": torch.rand(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="16 x 16 px but the model works at 32 x 32 px"):
        module.loss({"retouched": torch.rand(1, 3, 32, 32), "raw": torch.rand(1, 3, 16, 16)})
    with pytest.raises(ValueError, match="2 retouched faces but 1 raw"):
        module.loss({"retouched": torch.rand(2, 3, 32, 32), "raw": torch.rand(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="NaN"):
        module.loss({"retouched": torch.full((1, 3, 32, 32), float("nan")), "raw": torch.rand(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="stage"):
        FRRModule(stage="gan")
    with pytest.raises(ValueError, match="multiple of low_size"):
        FRRModule(size=64, low_size=24)


def test_the_two_stages_reverse_together():
    fmar = FRRModule("fmar", size=32, low_size=16, network=TINY["fmar"])
    hfdg = FRRModule("hfdg", size=32, low_size=16, network=TINY["hfdg"])
    pipeline = FRRffusion(fmar, hfdg, steps=3)
    retouched = torch.rand(2, 3, 32, 32)
    result = pipeline.reverse(retouched, torch.Generator().manual_seed(0))
    assert result.output.shape == (2, 3, 32, 32) and result.coarse.shape == (2, 3, 16, 16)
    # an untrained HFDG adds the retouched face's details above 16 px, nothing else
    x = to_network(retouched)
    details = x - resize(resize(x, 16), 32)
    torch.testing.assert_close(result.output, to_image(to_network(result.coarse_up) + details))
    with pytest.raises(ValueError, match="'fmar' and an 'hfdg'"):
        FRRffusion(hfdg, fmar)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        pipeline.reverse(torch.rand(1, 3, 64, 64))


def test_a_stage_fits_with_lightning(tmp_path):
    data = RetouchDataModule(size=32, train_length=4, val_length=2, test_length=2, batch_size=2)
    module = FRRModule(stage="hfdg", size=32, low_size=16, network=TINY["hfdg"])
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2 and "val/psnr" in trainer.callback_metrics


def test_hfdg_trains_on_fmar_samples_drawn_once(tmp_path):
    """With ``coarse_from``, the pairs carry FMAR's seeded sample of each retouched face (the
    same as sampling it by hand), kept in the cache folder; HFDG then reads them, not the
    raw face brought down and back."""
    import lightning as L

    from sgpn.data.procedural import derive_seed
    from sgpn.images import to_network
    from sgpn.nets.fmar import resize
    from sgpn.retouch.pipeline import fmar_samples

    fmar = FRRModule("fmar", size=32, low_size=16, network=TINY["fmar"], sample_steps=2)
    with torch.no_grad():
        fmar.net.unet.conv_out.weight.normal_(0, 0.1)  # samples that depend on the face
    checkpoint = tmp_path / "fmar.ckpt"
    torch.save({"state_dict": fmar.state_dict(), "hyper_parameters": dict(fmar.hparams),
                "pytorch-lightning_version": L.__version__}, checkpoint)
    options = dict(size=32, train_length=4, val_length=2, test_length=2, batch_size=2,
                   coarse_from=str(checkpoint), cache_dir=str(tmp_path / "cache"))
    data = RetouchDataModule(**options)
    data.setup("fit")
    train = data.datasets["train"]
    item = train[(1, 0)]  # the training sampler's (index, epoch)
    assert item["coarse"].shape == (3, 16, 16) and torch.equal(item["retouched"], train.pairs[1]["retouched"])
    plain = RetouchDataModule(size=32, train_length=4, val_length=2, test_length=2)
    plain.setup("fit")
    by_hand = fmar_samples(fmar, plain.datasets["train"], seed=derive_seed(0, "coarse", "train"), progress=False)
    torch.testing.assert_close(train.coarse, by_hand)
    assert len(list((tmp_path / "cache").glob("fmar-samples-*.pt"))) == 2  # train and val
    again = RetouchDataModule(**options)
    again.setup("fit")
    assert torch.equal(again.datasets["train"].coarse, train.coarse)

    hfdg = FRRModule("hfdg", size=32, low_size=16, network=TINY["hfdg"])
    batch = next(iter(data.train_dataloader()))
    coarse_up = resize(to_network(batch["coarse"]), 32).clamp(-1, 1)
    torch.testing.assert_close(hfdg.coarse_input(batch, to_network(batch["raw"]), noise=0.0), coarse_up)
    with pytest.raises(ValueError, match="16 px"):
        hfdg.coarse_input({**batch, "coarse": batch["retouched"]}, batch["raw"], noise=0.0)


def test_pair_data_module_reads_a_deepfrr_folder(tmp_path):
    for i in range(6):
        for folder, shade in (("deimage/face", 120 + i), ("rawimage", 100 + i)):
            path = tmp_path / folder / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), (shade, shade, shade)).save(path)
    data = RetouchDataModule(source=str(tmp_path), size=16, val_length=1, test_length=2, batch_size=3)
    data.setup("fit")
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    batch = next(iter(data.train_dataloader()))
    assert batch["retouched"].shape == (3, 3, 16, 16)
    assert torch.allclose(batch["retouched"] - batch["raw"], torch.full_like(batch["raw"], 20 / 255), atol=1e-3)
    with pytest.raises(ValueError, match="too few"):
        RetouchDataModule(source=str(tmp_path), size=16, val_length=3, test_length=3).setup("fit")


def test_synthetic_pairs_keep_their_retouch_per_split():
    data = RetouchDataModule(size=32, train_length=3, val_length=2, test_length=2, batch_size=2)
    data.setup("fit")
    first = data.datasets["test"][0]
    again = RetouchDataModule(size=32, train_length=3, val_length=2, test_length=2, seed=5)
    again.setup("fit")
    assert torch.equal(again.datasets["test"][0]["retouched"], first["retouched"])  # test set fixed
    assert again.datasets["train"][0]["params"] != data.datasets["train"][0]["params"]


def test_window_attention_treats_each_image_of_a_batch_alone():
    attention = WindowAttention(8, window=4, heads=2, shift=2)
    x = torch.randn(3, 8, 8, 8)
    torch.testing.assert_close(attention(x)[1:2], attention(x[1:2]))


def test_a_kept_pair_is_the_pair_retouched_afresh():
    data = RetouchDataModule(size=32, train_length=3, val_length=1, test_length=1)
    data.setup("fit")
    train = data.datasets["train"]
    first = train[1]
    first["retouched"].zero_()  # what a caller does to an item must not reach the kept pair
    first["params"]["slim"] = 99.0
    fresh = RetouchedFaces(train.faces, train.retouch, train.seed)[1]
    again = train[1]
    assert torch.equal(again["retouched"], fresh["retouched"]) and again["params"] == fresh["params"]


def test_the_forward_process_fades_the_face_into_noise():
    fmar = FMAR(size=16, **TINY["fmar"])
    clean = torch.rand(2, 3, 16, 16) * 2 - 1
    noised = fmar.noised(clean, [0, 500, 999], torch.Generator().manual_seed(0))
    assert noised.shape == (3, 2, 3, 16, 16)
    correlation = [torch.corrcoef(torch.stack([x.flatten(), clean.flatten()]))[0, 1].item() for x in noised]
    assert correlation[0] > 0.99 and correlation[0] > correlation[1] > correlation[2] and abs(correlation[2]) < 0.1
    with pytest.raises(ValueError, match="0..999"):
        fmar.noised(clean, [1000])


def test_the_mean_of_samples_is_the_average_of_single_draws():
    fmar = FRRModule("fmar", size=32, low_size=16, network=TINY["fmar"])
    hfdg = FRRModule("hfdg", size=32, low_size=16, network=TINY["hfdg"])
    pipeline = FRRffusion(fmar, hfdg, steps=2)
    retouched = torch.rand(1, 3, 32, 32)
    generator = torch.Generator().manual_seed(3)
    draws = [pipeline.reverse(retouched, generator).coarse for _ in range(2)]  # two draws, one after the other
    mean = pipeline.reverse(retouched, torch.Generator().manual_seed(3), samples=2).coarse
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(mean, (draws[0] + draws[1]) / 2)
    with pytest.raises(ValueError, match="at least 1"):
        pipeline.reverse(retouched, samples=0)
