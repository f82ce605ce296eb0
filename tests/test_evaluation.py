"""Evaluation: test sets, baselines, tables, the `sgpn evaluate` command, shape from LQ and
the AFFB statistic, on a 32 px micro model (untrained: the plumbing, not the numbers)."""

from __future__ import annotations

import csv
import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from sgpn.cli import main
from sgpn.evaluation.affb import (
    MASK_INTERVENTIONS,
    affb_statistics,
    i3d_quality,
    mask_interventions,
    ratio_curve,
    single_occluder_faces,
)
from sgpn.evaluation.bounds import BOUND_METHODS, bound_reconstructions, restoration_bounds
from sgpn.evaluation.claims import beats, reaches, restoration_claims
from sgpn.evaluation.metrics import MetricResult, MetricSuite
from sgpn.evaluation.scoring import checkpoint_method, evaluate, nearest_input, parse_checkpoints
from sgpn.evaluation.shape_accuracy import shape_from_lq
from sgpn.evaluation.tables import Evaluation, Row, read_evaluation
from sgpn.evaluation.test_sets import DEGRADATION_LEVELS, degraded_test_set, folder_pair_test_set, synthetic_faces
from sgpn.training import SGPNModule

MICRO = dict(generator={"size": 32, "channels": {4: 16, 8: 16, 16: 8, 32: 8}, "encoder_style_dim": 32,
                        "style_dim": 32},
             regressor={"backbone": "resnet18_2stages", "input_size": 32}, mesh_losses=False)


def micro_module(**overrides) -> SGPNModule:
    torch.manual_seed(0)
    module = SGPNModule(**{**MICRO, **overrides}).eval()
    with torch.no_grad():  # let the spatial features (and with them the AFFB masks) through
        for name, parameter in module.generator.named_parameters():
            if name.endswith("noise.weight"):
                parameter.fill_(1.0)
    return module


def save_checkpoint(module: SGPNModule, path):
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    return path


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(size=32, num_images=6, occluder_prob=1.0)


@pytest.fixture(scope="module")
def blind(faces):
    return degraded_test_set(faces, "blind", batch_size=4)


def test_test_sets_are_fixed_and_carry_ground_truth(faces, blind):
    again = degraded_test_set(faces, "blind")
    torch.testing.assert_close(again["lq"], blind["lq"])
    assert set(blind) >= {"hq", "lq", "coeffs", "landmarks", "occluder_mask", "face_mask"}
    assert blind["lq"].shape == blind["hq"].shape == (6, 3, 32, 32)
    inpaint = degraded_test_set(faces, "inpaint")
    assert inpaint["inpaint_mask"].shape == (6, 1, 32, 32) and inpaint["inpaint_mask"].any()
    torch.testing.assert_close(inpaint["hq"], blind["hq"])


def test_nearest_input_holds_the_low_resolution_pixels(faces):
    sr = degraded_test_set(faces, "sr4")
    output, coeffs = nearest_input(4)(sr)
    assert coeffs is None and output.shape == sr["hq"].shape
    blocks = output.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 8, 8, 4, 4)
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    assert not torch.equal(output, sr["lq"])  # bicubic (the network's input) is another row


def test_evaluate_rows_tables_and_files(tmp_path, faces, blind):
    module = micro_module()
    sets = {"blind": blind, "sr4": degraded_test_set(faces, "sr4")}
    evaluation = evaluate({"micro": module, "micro for SR": module}, sets, teacher=module.teacher, lpips=False,
                          fid=False, batch_size=4, progress=False, only_on={"micro for SR": "sr4"})
    assert [(r.task, r.method) for r in evaluation.rows] == [
        ("blind", "LQ input"), ("blind", "micro"),
        ("sr4", "LQ input (nearest)"), ("sr4", "bicubic"), ("sr4", "micro"), ("sr4", "micro for SR")]
    # the LQ row is the plain metric of the input; the checkpoint row has a vertex error
    suite = MetricSuite(lpips=False, fid=False)
    suite.update(blind["lq"], blind["hq"])
    assert evaluation.value("blind", "LQ input", "psnr") == pytest.approx(suite.compute()["psnr"].value)
    assert math.isnan(evaluation.value("blind", "LQ input", "vertex_error"))
    assert evaluation.value("blind", "micro", "vertex_error") > 0
    assert all(math.isfinite(evaluation.value(r.task, r.method, "nme")) for r in evaluation.rows)
    markdown, table = evaluation.write(tmp_path, "ablation", caption="Caption line")
    text = markdown.read_text()
    assert text.startswith("Caption line") and "| SR ×4 | bicubic |" in text and "PSNR ↑" in text
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 6 and rows[0]["vertex_error"] == "" and float(rows[1]["vertex_error"]) > 0
    assert float(rows[1]["nme_spread"]) > 0 and float(rows[1]["ssim_face"]) > 0
    again = read_evaluation(table)
    assert [(r.task, r.method, r.num_images) for r in again.rows] == [
        (r.task, r.method, r.num_images) for r in evaluation.rows]
    for metric in ("psnr", "ssim_face", "nme"):
        assert again.result("blind", "micro", metric) == evaluation.result("blind", "micro", metric)


def table_of(cells: dict) -> Evaluation:
    """An evaluation from ``{(task, method): {metric: (value, spread)}}``."""
    evaluation = Evaluation()
    for (task, method), metrics in cells.items():
        evaluation.rows.append(Row(task, method, {m: MetricResult(v, spread=s) for m, (v, s) in metrics.items()}, 500))
    return evaluation


def test_claims_hold_fail_or_fall_within_noise():
    table = table_of({
        ("blind", "LQ input"): {"fid": (300.0, None), "kid": (0.30, 0.02), "nme": (0.100, 0.002),
                                "psnr": (22.3, 0.1), "ssim_face": (0.560, 0.003)},
        ("blind", "full SGPN"): {"fid": (100.0, None), "kid": (0.06, 0.004), "nme": (0.079, 0.002),
                                 "psnr": (22.25, 0.1), "ssim_face": (0.585, 0.003)},
        ("blind", "A: no F_3d"): {"fid": (104.0, None), "kid": (0.062, 0.004), "nme": (0.090, 0.002),
                                  "psnr": (22.3, 0.1), "ssim_face": (0.580, 0.003)},
    })
    verdicts = {c.statement: c.verdict for c in restoration_claims(table, variants=["A: no F_3d"])}
    assert verdicts["full SGPN: FID ≤ 0.6 × LQ input's (blind restoration)"] == "holds"
    assert verdicts["full SGPN: NME ≤ 0.8 × LQ input's (blind restoration)"] == "holds"
    # 0.585 misses the bar of 0.590 by more than its standard error; PSNR misses 22.3 by less
    assert verdicts["full SGPN: SSIM face ≥ LQ input's +0.03 (blind restoration)"] == "fails"
    assert verdicts["full SGPN: PSNR ≥ LQ input's (blind restoration)"] == "within noise"
    assert verdicts["full SGPN beats A: no F_3d on NME (blind restoration)"] == "holds"
    # FID is 4 lower, but KID's gap is inside its spread: not a finding
    assert verdicts["full SGPN beats A: no F_3d on FID (blind restoration)"] == "within noise"
    assert beats(table, "blind", "A: no F_3d", "full SGPN", "nme").verdict == "fails"
    assert beats(table, "blind", "LQ input", "full SGPN", "fid").verdict == "fails"  # FID and KID agree
    assert "0.0790 ± 0.0020" in str(reaches(table, "blind", "full SGPN", "LQ input", "nme", factor=0.8))
    with pytest.raises(ValueError, match="hole_l1"):
        reaches(table, "blind", "full SGPN", "LQ input", "hole_l1")


def test_the_inpainting_claim_is_stated_for_the_model_trained_for_it():
    cells = {("blind", "LQ input"): {"fid": (300.0, None), "kid": (0.30, 0.02), "nme": (0.100, 0.002),
                                     "psnr": (22.3, 0.1), "ssim_face": (0.560, 0.003)},
             ("blind", "full SGPN"): {"fid": (100.0, None), "kid": (0.06, 0.004), "nme": (0.079, 0.002),
                                      "psnr": (22.25, 0.1), "ssim_face": (0.585, 0.003)},
             ("inpaint", "LQ input"): {"hole_l1": (0.35, 0.01)},
             ("inpaint", "full SGPN"): {"hole_l1": (0.32, 0.01)}}
    claim = restoration_claims(table_of(cells))[-1]
    assert claim.statement == "full SGPN: hole L1 ≤ 0.5 × LQ input's (inpainting)" and claim.verdict == "fails"
    cells[("inpaint", "SGPN for inpainting")] = {"hole_l1": (0.15, 0.01)}
    claim = restoration_claims(table_of(cells))[-1]
    assert claim.statement == "SGPN for inpainting: hole L1 ≤ 0.5 × LQ input's (inpainting)"
    assert claim.verdict == "holds"


def test_unavailable_metrics_are_named_not_numbered(blind, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no LPIPS/FID weights
    module = micro_module()
    evaluation = evaluate({"micro": module}, {"blind": blind}, teacher=module.teacher, progress=False)
    text = evaluation.markdown()
    assert "unavailable" in text and "no local weights" in text
    assert math.isnan(evaluation.value("blind", "micro", "lpips"))


def test_a_table_of_chosen_metrics_puts_each_value_under_its_own_header():
    row = Row("blind", "model", {"psnr": MetricResult(22.5, spread=0.1), "fid": MetricResult(70.0),
                                 "nme": MetricResult(0.0584, spread=0.0013)}, 512)
    table = Evaluation(rows=[row], metrics=("fid", "nme", "psnr"))
    header, _, line = table.markdown().splitlines()[:3]
    columns = dict(zip(header.split("|")[3:-1], line.split("|")[3:-1]))
    assert {title.split()[0]: cell.strip() for title, cell in columns.items()} == {
        "FID": "70.00", "NME": "0.0584 ± 0.0013", "PSNR": "22.50 ± 0.10"}


def test_a_column_no_row_has_a_number_for_is_left_out(tmp_path):
    rows = [Row("blind", name, {"psnr": MetricResult(value, spread=0.1), "lpips": MetricResult(None, "no weights")}, 8)
            for name, value in (("a", 22.5), ("b", 23.0))]
    _, table = Evaluation(rows=rows, metrics=("psnr", "lpips", "fid")).write(tmp_path, "t")
    shown = read_evaluation(table).without_empty_columns()
    assert shown.metrics == ("psnr",) and "LPIPS" not in shown.markdown() and shown.value("blind", "b", "psnr") == 23.0


def test_folder_pairs_match_by_name(tmp_path):
    for side in ("lq", "hq"):
        (tmp_path / side).mkdir()
        for name in ("a", "b"):
            Image.fromarray(np.full((40, 40, 3), 100 if side == "lq" else 200, np.uint8)).save(
                tmp_path / side / f"{name}.png")
    pair = folder_pair_test_set(tmp_path / "lq", tmp_path / "hq", 32)
    assert pair["lq"].shape == pair["hq"].shape == (2, 3, 32, 32)
    assert pair["lq"].mean() < pair["hq"].mean()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "hq" / "c.jpg")
    with pytest.raises(ValueError, match="only in hq: c"):
        folder_pair_test_set(tmp_path / "lq", tmp_path / "hq", 32)


def test_parse_checkpoints(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"x")
    assert parse_checkpoints([str(path), f"full={path}"]) == {"model": path, "full": path}
    with pytest.raises(ValueError, match="two checkpoints are named 'model'"):
        parse_checkpoints([str(path), str(path)])
    with pytest.raises(FileNotFoundError, match="checkpoint 'x' not found"):
        parse_checkpoints([f"x={tmp_path / 'missing.ckpt'}"])


def test_evaluate_command_on_a_folder_pair_and_synthetic_tasks(tmp_path, capsys):
    checkpoint = save_checkpoint(micro_module(), tmp_path / "micro.ckpt")
    for side in ("lq", "hq"):
        (tmp_path / side).mkdir()
        for i in range(3):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8)).save(
                tmp_path / side / f"{i}.png")
    main(["evaluate", "--ckpt", f"full={checkpoint}", "--pair", str(tmp_path / "lq"), str(tmp_path / "hq"),
          "--no-lpips", "--no-fid", "--out", str(tmp_path / "out"), "--name", "pair"])
    assert "| given LQ | full |" in capsys.readouterr().out
    assert (tmp_path / "out" / "pair.csv").is_file()
    main(["evaluate", "--ckpt", f"full={checkpoint}", "--tasks", "sr8", "inpaint", "--num-images", "2",
          "--no-lpips", "--no-fid", "--out", str(tmp_path / "out")])
    rows = list(csv.DictReader((tmp_path / "out" / "evaluation.csv").open()))
    assert [(r["task"], r["method"]) for r in rows] == [
        ("sr8", "LQ input (nearest)"), ("sr8", "bicubic"), ("sr8", "full"),
        ("inpaint", "LQ input"), ("inpaint", "full")]
    assert all(r["images"] == "2" for r in rows)


def test_shape_from_lq_rows(faces):
    module = micro_module()
    evaluation = shape_from_lq({"teacher": module.teacher, "joint": module.shape_prior}, faces)
    assert len(evaluation.rows) == 2 * (1 + len(DEGRADATION_LEVELS))
    assert all(r.results["vertex_error"].value >= 0 and math.isfinite(r.results["nme"].value)
               for r in evaluation.rows)


def test_affb_statistics_compare_occluder_and_skin(blind):
    module = micro_module()
    stats = affb_statistics(module, blind, batch_size=4)
    assert sorted(stats.occluder) == [16, 32]  # resolutions >= 16 of a 32 px model
    restored = module.restore(blind["lq"])
    mean = torch.stack([m.mean(1, keepdim=True) for (r, _), m in restored.masks.items() if r == 32]).mean(0)
    torch.testing.assert_close(stats.mean_masks[32], mean)
    occluder = blind["occluder_mask"] > 0.5
    skin = (blind["face_mask"] > 0.5) & ~(blind["occluder_mask"] > 0)
    assert stats.occluder[32] == pytest.approx(mean[occluder].mean().item(), rel=1e-5)
    assert stats.skin[32] == pytest.approx(mean[skin].mean().item(), rel=1e-5)
    assert stats.ratio[32] == pytest.approx(stats.occluder[32] / stats.skin[32])
    assert len(stats.per_image_ratio[32]) > 0
    covered = blind["occluder_mask"].expand_as(blind["hq"]) > 0.5
    expected = (restored.output - blind["hq"]).abs()[covered].mean().item()
    assert stats.occluder_l1["output"] == pytest.approx(expected, rel=1e-4)
    assert stats.occluder_l1["i3d"] > 0
    with pytest.raises(ValueError, match="need a model with AFFB"):
        affb_statistics(micro_module(fusion="sum"), blind)


def test_the_prior_ladder_measures_masks_and_i3d_with_the_true_coefficients(blind):
    """The ladder's models render I_3d from (part of the way to) the true coefficients: the
    oracle's I_3d has no vertex error, the mix's half the regressor's error in coefficients,
    and the pooled ratio comes with a bootstrap standard error."""
    frozen = dict(train_shape_prior=False, mesh_losses=False)
    ladder = {prior: micro_module(prior=prior, **frozen) for prior in ("regressor", "mix", "oracle")}
    quality = {prior: i3d_quality(module, blind, batch_size=4) for prior, module in ladder.items()}
    assert quality["oracle"]["i3d_vertex_error"] == pytest.approx(0, abs=1e-6)
    assert quality["regressor"]["i3d_vertex_error"] > quality["mix"]["i3d_vertex_error"] > 0
    regressed = ladder["regressor"].restore(blind["lq"]).coeffs
    torch.testing.assert_close(ladder["mix"].restore(blind["lq"], blind["coeffs"]).coeffs,
                               (regressed + blind["coeffs"]) / 2, rtol=1e-5, atol=1e-5)
    stats = affb_statistics(ladder["oracle"], blind, batch_size=4)
    errors = stats.ratio_se()
    assert set(errors) == set(stats.ratio) and all(0 < e < 1 for e in errors.values())
    assert stats.ratio_se() == errors  # seeded
    with pytest.raises(ValueError, match="only synthetic faces have them"):
        ladder["oracle"].restore(blind["lq"])
    with pytest.raises(ValueError, match="keeps the shape module frozen"):
        micro_module(prior="oracle")


def test_the_ratio_curve_follows_a_run_by_its_iterations(blind, tmp_path):
    """Each checkpoint of a run gives one row, ordered by the iterations it was trained for, with
    the same ratio as the statistics of the loaded model."""
    frozen = dict(train_shape_prior=False, mesh_losses=False, prior="oracle")
    paths = []
    for iterations in (30, 10):
        module = micro_module(**frozen)
        module.iterations.fill_(iterations)
        paths.append(save_checkpoint(module, tmp_path / f"step={2 * iterations}.ckpt"))
    rows = ratio_curve(paths, blind)
    assert [row["iterations"] for row in rows] == [10, 30]
    stats = affb_statistics(micro_module(**frozen), blind)
    assert rows[0]["ratio"] == {str(r): round(v, 4) for r, v in stats.ratio.items()}
    with pytest.raises(ValueError, match="no checkpoints"):
        ratio_curve([], blind)


def test_single_occluder_faces_name_the_first_face_wearing_only_that():
    from sgpn.data.face_painter import OCCLUDERS

    worn = torch.zeros(4, len(OCCLUDERS), dtype=torch.bool)
    worn[0, [OCCLUDERS.index("sunglasses"), OCCLUDERS.index("hat")]] = True   # two at once: not alone
    worn[1, OCCLUDERS.index("hat")] = worn[2, OCCLUDERS.index("sunglasses")] = worn[3, OCCLUDERS.index("hat")] = True
    assert single_occluder_faces({"occluders": worn}, ("sunglasses", "hat")) == {"sunglasses": 2, "hat": 1}
    with pytest.raises(ValueError, match="wears only 'hand'"):
        single_occluder_faces({"occluders": worn}, ("hand",))
    assert single_occluder_faces({"occluders": worn}, ("hand", "hat"), required=False) == {"hat": 1}
    with pytest.raises(ValueError, match="wears only one of"):
        single_occluder_faces({"occluders": worn}, ("hand",), required=False)


def test_mask_interventions_set_the_masks_by_hand_and_restore_them(blind):
    """The learned setting is the plain restoration; M = 1 everywhere is what the masks give
    where they take F_lq; on occluder pixels, setting M there equals setting it everywhere;
    the learned masks come back afterwards, also after an error inside the block."""
    from sgpn.nets.generator import overridden_masks

    module = micro_module()
    results = mask_interventions(module, blind, batch_size=4)
    assert set(results) == set(MASK_INTERVENTIONS)
    restored = module.restore(blind["lq"])
    assert results["learned"]["l1"] == pytest.approx((restored.output - blind["hq"]).abs().mean().item(), rel=1e-5)
    assert results["M = 0.5 everywhere"]["l1"] != pytest.approx(results["learned"]["l1"], rel=1e-6)
    with overridden_masks(module.generator, torch.ones_like):
        forced = module.restore(blind["lq"])
    assert all(torch.all(m == 1) for m in forced.masks.values())
    covered = blind["occluder_mask"].expand_as(blind["hq"]) > 0.5
    assert results["M = 1 everywhere (F_lq only)"]["occluder_l1"] == pytest.approx(
        (forced.output - blind["hq"]).abs()[covered].mean().item(), rel=1e-4)
    with pytest.raises(RuntimeError, match="inside"), overridden_masks(module.generator, torch.zeros_like):
        raise RuntimeError("inside")
    torch.testing.assert_close(module.restore(blind["lq"]).output, restored.output)
    with pytest.raises(ValueError, match="need a model with AFFB"):
        mask_interventions(micro_module(fusion="sum"), blind)
    with pytest.raises(ValueError, match="no AFFB masks"), overridden_masks(micro_module(fusion="sum").generator, torch.ones_like):
        pass


def test_mask_interventions_at_one_resolution_leave_the_other_blocks_learned(blind):
    module = micro_module()
    chosen = ["learned", "M = 0 everywhere (F_3d only)"]
    nowhere = mask_interventions(module, blind, batch_size=4, resolutions=[], settings=chosen)
    assert list(nowhere) == chosen and nowhere[chosen[1]] == pytest.approx(nowhere["learned"])
    top = max(r for r, _ in module.restore(blind["lq"][:1]).masks)
    assert mask_interventions(module, blind, batch_size=4, resolutions=[top], settings=chosen)[chosen[1]]["l1"] \
        != pytest.approx(nowhere["learned"]["l1"], rel=1e-6)
    with pytest.raises(ValueError, match="unknown mask settings"):
        mask_interventions(module, blind, settings=["M = 2"])


def test_checkpoint_method_returns_output_and_prior_coefficients(blind):
    output, coeffs = checkpoint_method(micro_module())(blind)
    assert output.shape == blind["hq"].shape and coeffs.shape == (6, 257)
    assert 0 <= output.min() and output.max() <= 1


def test_restoration_bounds_hand_each_reconstruction_one_piece_of_truth(faces, blind):
    bounds = restoration_bounds(bound_reconstructions(faces, batch_size=4), batch_size=4)
    assert [row.method for row in bounds.rows] == list(BOUND_METHODS)
    psnr = {BOUND_METHODS[row.method]: row.results["psnr"].value for row in bounds.rows}
    suite = MetricSuite(lpips=False, fid=False)
    suite.update(blind["lq"], blind["hq"])
    assert psnr["lq"] == pytest.approx(suite.compute()["psnr"].value)
    # the true face on the visible pixels can only help; without noise and JPEG the same blur
    # and downsampling are left (same draws), which is closer to the truth
    assert psnr["lq_with_face"] > psnr["lq"]
    assert psnr["lq_noise_free"] > psnr["lq"]
    noise_free = degraded_test_set(faces, "blind", {"reference_size": 512, "noise": None, "jpeg_quality": None},
                                   batch_size=4)
    for params, clean in zip(blind["degradation"], noise_free["degradation"]):
        assert (params["sigma_x"], params["downscale"]) == (clean["sigma_x"], clean["downscale"])
    assert math.isfinite(psnr["lq_with_render"])
    assert "visible face" in bounds.markdown()


def test_unpaired_real_faces_are_scored_against_a_cached_reference(tmp_path, capsys, monkeypatch):
    """Real LQ faces without originals: FID and KID of the input and of each model against a
    reference folder, whose features are computed once per content."""
    from sgpn.evaluation.inception import StandardInception, folder_features

    checkpoint = save_checkpoint(micro_module(), tmp_path / "micro.ckpt")
    for side, count in (("lq", 3), ("reference", 4)):
        (tmp_path / side).mkdir()
        for i in range(count):
            Image.fromarray(np.random.default_rng(10 * count + i).integers(0, 255, (32, 32, 3), np.uint8)).save(
                tmp_path / side / f"{i}.png")
    main(["evaluate", "--ckpt", f"full={checkpoint}", "--unpaired", str(tmp_path / "lq"), str(tmp_path / "reference"),
          "--out", str(tmp_path / "out"), "--name", "real"])
    assert "| real LQ (unpaired) | input |" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "out" / "real.csv").open()))
    assert [(r["method"], r["images"]) for r in rows] == [("input", "3"), ("full", "3")]
    assert all(float(r["fid"]) > 0 and r["kid"] and "psnr" not in r for r in rows)

    inception = StandardInception()
    cached = folder_features(tmp_path / "reference", 32, inception, progress=False)
    monkeypatch.setattr(inception, "run_network", lambda images: pytest.fail("the cache was not used"))
    assert torch.equal(folder_features(tmp_path / "reference", 32, inception, progress=False), cached)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "reference" / "3.png")  # content changed
    with pytest.raises(pytest.fail.Exception, match="the cache was not used"):
        folder_features(tmp_path / "reference", 32, inception, progress=False)
