"""Benchmarks behind ``sgpn bench NAME``: each returns a dict printed as one JSON line.

Speed targets are checked here, by measuring, never by timed tests.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import matplotlib
import torch
import yaml

from sgpn.app.browser import chromium, explorer_latencies, jupyterlab, kernel_value, run_all, voila
from sgpn.app.widgets import CoefficientExplorer
from sgpn.checkpoints import load, load_teacher, training_minutes
from sgpn.data.folder import read_rgb
from sgpn.evaluation.affb import AFFB_RATIO_TARGET, affb_statistics, ladder_rungs, ratio_curve
from sgpn.evaluation.annotator import landmark_check
from sgpn.evaluation.bounds import BOUND_METHODS, bound_reconstructions, restoration_bounds
from sgpn.evaluation.inception import StandardInception
from sgpn.evaluation.kit_models import LADDER
from sgpn.evaluation.scoring import (
    ABLATION_IMAGES,
    TASK_IMAGES,
    ablation_evaluation,
    checkpoint_method,
    data_settings,
    evaluate,
    score,
)
from sgpn.evaluation.shape_accuracy import contour_gap_nme, fit_rows, shape_rows
from sgpn.evaluation.test_sets import degraded_test_set, synthetic_faces
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.renderer import rasterize, rasterize_pytorch3d
from sgpn.nets.generator import SGPNGenerator, state_dict_numel
from sgpn.nets.regressor import CoefficientRegressor
from sgpn.nets.restorer import SGPNRestorer
from sgpn.nets.shape_prior import ShapePrior
from sgpn.paths import KIT_CHECKPOINTS, KIT_ROOT
from sgpn.photo.alignment import align, paste_back
from sgpn.photo.cpu_memory import reuse_freed_memory
from sgpn.photo.detection import detect_faces
from sgpn.photo.restore import restore_photo
from sgpn.retouch.evaluation import FRR_CHECKPOINTS, FRR_ROWS, kit_frr_evaluation
from sgpn.training.profiling import profile_iterations

#: The kit's root: benchmarks name configs and checkpoints relative to it.


def median_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench_raster(image_size: int = 224, repeats: int = 10) -> dict:
    """Fast rasterizer against PyTorch3D's ``MeshRasterizer`` on the same face and camera."""
    model = load_face_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        face = model(model.random_coefficients(1, generator=generator), image_size)
        vertices = face.vertices
        fast = rasterize(vertices, model.faces, image_size)
        fast_ms = median_ms(lambda: rasterize(vertices, model.faces, image_size), repeats)
        start = time.perf_counter()
        reference = rasterize_pytorch3d(vertices, model.faces, image_size)
        pytorch3d_ms = (time.perf_counter() - start) * 1000.0
    agreement = (fast.pix_to_face == reference.pix_to_face).float().mean().item()
    return {
        "vertices": model.num_vertices,
        "faces": model.num_faces,
        "image_size": image_size,
        "fast_ms": round(fast_ms, 2),
        "pytorch3d_ms": round(pytorch3d_ms, 1),
        "speedup": round(pytorch3d_ms / fast_ms, 1),
        "pixel_agreement": round(agreement, 6),
    }


def bench_explorer(image_size: int = 224, repeats: int = 20) -> dict:
    """Time from a slider change to the updated image and preview-mesh data, in the kernel, on
    CPU (tests/test_browser.py measures the same in a browser).

    ``update_ms`` moves an expression slider (new positions and image); ``texture_update_ms``
    moves a texture slider (new mesh colours and image).
    """
    explorer = CoefficientExplorer(image_size=image_size)
    values = iter(torch.linspace(-2, 2, 2 * repeats + 4).tolist() * 4)

    def move(key):
        explorer.sliders[key].value = next(values)

    return {
        "vertices": explorer.model.num_vertices,
        "preview_vertices": len(explorer.preview_index),
        "image_size": image_size,
        "update_ms": round(median_ms(lambda: move(("exp", 0)), repeats, warmup=2), 2),
        "texture_update_ms": round(median_ms(lambda: move(("tex", 0)), repeats, warmup=2), 2),
    }


#: The explorer's latency targets in a browser, milliseconds from key-down (median).
BROWSER_TARGETS_MS = {"image_ms": 150, "mesh_ms": 250}


def bench_browser(presses: int = 10) -> dict:
    """The explorer in Chromium: median key-press-to-image and key-press-to-mesh times in
    JupyterLab (notebook 01 after Run All) and in the Voila app, against the targets."""
    rows = {}
    with tempfile.TemporaryDirectory() as scratch, chromium() as browser:
        for name in ("jupyterlab", "voila"):
            folder = Path(scratch) / name
            folder.mkdir()
            server = (jupyterlab(folder, [KIT_ROOT / "notebooks" / "01_morphable_model.ipynb"]) if name == "jupyterlab"
                      else voila(folder, KIT_ROOT))
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            try:
                if name == "jupyterlab":
                    kernel = run_all(page, server, KIT_ROOT / "notebooks" / "01_morphable_model.ipynb")
                    page.wait_for_timeout(2000)  # late echoes of the cell that drives sliders from code
                    kernel_value(kernel, "explorer.updates")  # as the browser test does before it measures
                    kernel.stop_channels()
                else:
                    page.goto(server.url)
                    page.locator("img.widget-image").first.wait_for(timeout=240_000)
                rows[name] = explorer_latencies(page, presses)
            finally:
                page.close()
                server.stop()
    meets = {name: {key: row[key] <= target for key, target in BROWSER_TARGETS_MS.items()} for name, row in rows.items()}
    return {"presses": presses, "rows": rows, "targets_ms": BROWSER_TARGETS_MS, "meets": meets}


def bench_generator(repeats: int = 5) -> dict:
    """SGPN generator forward on CPU, batch 1, no grad: the 512 paper config and the tiny one.

    ``ms_per_image`` uses the default allocator; ``ms_per_image_reused_memory`` is measured
    afterwards with :func:`sgpn.photo.cpu_memory.reuse_freed_memory` switched on (``null`` if unavailable).
    ``load_avg_1min`` records how busy the machine was: other processes on the same cores
    slow every multi-threaded op down.
    """
    torch.manual_seed(0)
    models = {name: SGPNGenerator(name).eval() for name in ("paper", "tiny")}

    def ms_per_image(name: str, runs: int = repeats) -> float:
        size = models[name].size
        lq, i3d = torch.rand(2, 1, 3, size, size) * 2 - 1
        coeff = torch.randn(1, 257) * 0.5
        with torch.no_grad():
            return median_ms(lambda: models[name](lq, i3d, coeff), runs)

    load = os.getloadavg()[0]
    result = {
        "size": models["paper"].size,
        "params": state_dict_numel(models["paper"]),
        "ms_per_image": round(ms_per_image("paper"), 1),
        "ms_per_image_tiny": round(ms_per_image("tiny", 10 * repeats), 2),
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(load, 2),
    }
    reused = reuse_freed_memory()
    result["ms_per_image_reused_memory"] = round(ms_per_image("paper"), 1) if reused else None
    return result


def bench_train(config: str = "configs/tiny.yaml", out: str | None = None) -> dict:
    """Train tiny SGPN with ``sgpn fit --config configs/tiny.yaml`` (a fresh process, in a
    scratch folder) and score it on the held-out synthetic test set.

    ``minutes`` is the wall time of the whole command. FID and KID (standard Inception), the
    landmark NME, SSIM on the face and PSNR compare the LQ input and the restored output with the
    HQ faces (:func:`evaluate_checkpoint`).
    ``load_avg_1min`` before and after say how busy the machine was. ``out``: run in this
    folder and keep it (its ``runs/`` holds the checkpoint and logs) instead of a scratch one.
    """
    config_path = (KIT_ROOT / config).resolve()
    settings = yaml.safe_load(config_path.read_text())
    load_before = os.getloadavg()[0]
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    folder = nullcontext(str(Path(out).resolve())) if out else tempfile.TemporaryDirectory(prefix="sgpn-bench-train-")
    with folder as scratch:
        command = [sys.executable, "-m", "sgpn.cli", "fit", "--config", str(config_path),
                   "--trainer.enable_progress_bar", "false"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True)
        minutes = (time.perf_counter() - start) / 60
        if done.returncode:
            raise RuntimeError(f"training failed ({done.returncode}):\n{done.stderr[-4000:]}")
        checkpoint = Path(scratch) / settings["trainer"]["callbacks"][0]["init_args"]["dirpath"] / "last.ckpt"
        scores = evaluate_checkpoint(checkpoint, settings["data"]["init_args"])
    return {"config": config, "minutes": round(minutes, 2), **scores,
            "threads": torch.get_num_threads(), "load_avg_1min_before": round(load_before, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2)}


#: The metrics of a restoration row in ``bench train`` / ``bench ablation``, and their decimals.
ROW_METRICS = {"fid": 2, "kid": 4, "nme": 4, "ssim_face": 4, "psnr": 2}
#: ``bench ablation``'s row keys for the evaluation's method names.
ROW_KEYS = {"LQ input": "lq", "LQ input (nearest)": "lq", "bicubic": "bicubic", "full SGPN": "full",
            "A: no F_3d": "A", "B: no AFFB": "B", "C: no mesh losses": "C",
            "SGPN for inpainting": "full_inpaint"}


def row_scores(results: dict) -> dict:
    """One row's numbers, rounded; KID with its standard deviation over subsets."""
    row = {name: round(results[name].value, digits) for name, digits in ROW_METRICS.items() if name in results}
    if "kid" in results:
        row["kid_std"] = round(results["kid"].spread, 4)
    if "hole_l1" in results:
        row["hole_l1"] = round(results["hole_l1"].value, 4)
    return row


def evaluate_checkpoint(checkpoint, data: dict, num_images: int = 512) -> dict:
    """FID, KID, landmark NME, SSIM on the face and PSNR of the LQ input and of the restored
    faces, on the first ``num_images`` faces of the held-out set at the data's degradation."""
    module = load(checkpoint)
    test_set = degraded_test_set(synthetic_faces(data["size"], num_images), "blind", data.get("degradation_kwargs"))
    evaluation = evaluate({"out": module}, {"blind": test_set}, load_teacher(module), lpips=False, progress=False)
    rows = {"lq" if row.method == "LQ input" else "out": row_scores(row.results) for row in evaluation.rows}
    return {"images": num_images, **{f"{metric}_{key}": rows[key][metric]
                                     for metric in (*ROW_METRICS, "kid_std") for key in ("lq", "out")}}


def bench_ablation(num_images: int | None = None, task_images: int | None = None) -> dict:
    """The paper's ablation on the committed kit checkpoints
    (:func:`sgpn.evaluation.scoring.ablation_evaluation`): the LQ input, the full model and variants A
    (no F_3d), B (no AFFB) and C (no mesh losses) at the blind degradation on ``num_images``
    held-out faces, then the same models (and bicubic) on SR x4/x8/x16 and inpainting on the
    first ``task_images`` of them, with the full model trained for inpainting (``full_inpaint``)
    in the inpainting rows. HQ Inception features are cached between runs."""
    num_images, task_images = num_images or ABLATION_IMAGES, task_images or TASK_IMAGES
    evaluation = ablation_evaluation(num_images, task_images, lpips=False)
    tasks: dict[str, dict] = {}
    for row in evaluation.rows:
        tasks.setdefault(row.task, {})[ROW_KEYS[row.method]] = row_scores(row.results)
    return {"images": num_images, "rows": tasks.pop("blind"), "task_images": task_images, **tasks}


def bench_affb(checkpoint: str = "kit_checkpoints/sgpn_tiny.ckpt", num_images: int = 256) -> dict:
    """The paper's AFFB claim on the synthetic held-out set: the channel-mean mask M (the weight
    of F_lq) on occluder pixels over skin pixels, per resolution >= 16, for the full tiny model,
    and the mean L1 to the HQ face on occluder pixels of the output and of I_3d, over all
    occluders and over faces wearing only sunglasses (the sunglasses must come from the input,
    not from the 3D face's eyes). The test faces all carry an occluder
    (sunglasses, eyeglasses, hat, hand or microphone)."""
    path = KIT_ROOT / checkpoint  # an absolute checkpoint path stays as it is
    module = load(path)
    faces = synthetic_faces(module.size, num_images, occluder_prob=1.0)
    stats = affb_statistics(module, degraded_test_set(faces, "blind"))
    top = sorted(stats.ratio)[-2:]
    return {"checkpoint": checkpoint, **stats.summary(),
            "target_met": all(stats.ratio[r] >= AFFB_RATIO_TARGET for r in top)
            and stats.occluder_l1["output"] < stats.occluder_l1["i3d"]
            and stats.sunglasses_l1["output"] < stats.sunglasses_l1["i3d"]}


def bench_affb_ladder(num_images: int = 256) -> dict:
    """When does AFFB choose? The occluder/skin ratio of the masks (with its bootstrap standard
    error), the occluder L1 of the output and of I_3d, I_3d's own quality (vertex error, PSNR
    on skin) and the output's FID, NME and SSIM on the face, for the ladder's three models on
    the same held-out faces, each wearing an occluder, as in ``bench affb``."""
    test_set = degraded_test_set(synthetic_faces(64, num_images, occluder_prob=1.0), "blind")
    rows = ladder_rungs(test_set)
    modules = {name: load(KIT_CHECKPOINTS / file) for name, file in LADDER.items()}
    teacher = load_teacher(modules["C"])
    inception = StandardInception()
    for name, module in modules.items():
        results, _ = score(checkpoint_method(module), test_set, teacher, teacher.face_model, lpips=False,
                           inception=inception)
        rows[name].update({k: round(results[k].value, 4 if k != "fid" else 2) for k in ("fid", "nme", "ssim_face")})
    steps = [("C", "mix"), ("mix", "oracle")]
    rises = all(rows[b]["ratio"]["64"] - rows[a]["ratio"]["64"]
                > 2 * math.hypot(rows[a]["ratio_se"]["64"], rows[b]["ratio_se"]["64"]) for a, b in steps)
    oracle = rows["oracle"]
    minutes = {name: training_minutes(KIT_CHECKPOINTS / file) for name, file in LADDER.items()}
    return {"images": num_images, "rows": rows,
            "minutes": {name: None if m is None else round(m, 1) for name, m in minutes.items()},
            "targets": {"oracle_ratio_1.3_at_32_and_64": all(oracle["ratio"][r] >= AFFB_RATIO_TARGET for r in ("32", "64")),
                        "rises_at_64_beyond_2_se": rises,
                        "oracle_output_beats_its_i3d_on_occluders":
                            oracle["occluder_l1_output"] < oracle["occluder_l1_i3d"]}}


#: Where the oracle rung, trained on to its budget (``make ladder``, configs/ladder/oracle_longer.yaml),
#: keeps a checkpoint every 250 iterations (Lightning's step counts both optimisers).
ORACLE_RUN = KIT_ROOT / "runs" / "tiny_ladder_oracle" / "checkpoints"


def bench_affb_curve(run: str | Path = ORACLE_RUN, num_images: int = 256) -> dict:
    """The oracle's occluder/skin ratio against its training iterations, on the faces of ``bench
    affb``: every checkpoint of its longer run (the run's checkpoints are not shipped; ``make
    ladder`` writes this line to figures/affb_ladder_curve.json)."""
    paths = sorted(Path(run).glob("step=*.ckpt"))
    if not paths:
        raise FileNotFoundError(f"no step=*.ckpt checkpoints in {run}: train the oracle on with make ladder")
    test_set = degraded_test_set(synthetic_faces(64, num_images, occluder_prob=1.0), "blind")
    return {"images": num_images, "rows": ratio_curve(paths, test_set)}


def bench_step(config: str = "configs/tiny.yaml", iterations: int = 24) -> dict:
    """One training iteration of ``config`` before and after removing repeated work (the frozen
    teacher's targets computed once per face: ``cache_teacher_targets``), side by side in one
    process, same seed: seconds per iteration (the mean after the first), where they go, and
    whether the first 20 iterations' losses agree within 1e-4 relative. 64 training faces, so
    that the faces come round again within the run (the config's 4,000 come round 4 times)."""
    timers = {name: profile_iterations(KIT_ROOT / config, iterations, cache_teacher_targets=cache)
              for name, cache in (("before", False), ("after", True))}
    rows = {name: {"s_per_iteration": round(statistics.mean(timer.seconds[1:]), 3),
                   "ms_per_iteration": {part: round(1000 * seconds / len(timer.seconds), 1)
                                        for part, seconds in sorted(timer.parts.items(), key=lambda p: -p[1])}}
            for name, timer in timers.items()}
    same = all(math.isclose(a[key], b[key], rel_tol=1e-4)
               for a, b in zip(timers["before"].losses[:20], timers["after"].losses[:20]) for key in a)
    return {"config": config, "iterations": iterations, "rows": rows,
            "speedup": round(rows["before"]["s_per_iteration"] / rows["after"]["s_per_iteration"], 3),
            "same_losses": same and len(timers["before"].losses) >= 20, "threads": torch.get_num_threads()}


def bench_paper_step(iterations: int = 3) -> dict:
    """One iteration of ``configs/paper.yaml`` (512 px, batch 1) on this CPU, in float32 and in
    bf16 autocast (``--trainer.precision bf16-mixed``): the median seconds per iteration after
    the first, and each run's peak resident memory (each row runs in a fresh process). The frozen
    teacher has random weights in D3DFR's layout: time and memory do not depend on them."""
    with tempfile.TemporaryDirectory() as scratch:
        teacher = Path(scratch) / "epoch_20.pth"
        torch.save({"net_recon": CoefficientRegressor().state_dict()}, teacher)
        rows = {}
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            done = subprocess.run([sys.executable, "-m", "sgpn.training.profiling", precision, str(iterations),
                                   str(teacher)], capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"the {name} run failed:\n{done.stderr[-3000:]}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    parameters = rows["fp32"].pop("parameters")
    rows["bf16"].pop("parameters")
    return {"size": 512, "batch": 1, "rows": rows, "parameters": parameters, "threads": torch.get_num_threads()}


def bench_bounds(config: str = "configs/tiny.yaml") -> dict:
    """PSNR and SSIM on the held-out set of ``bench train`` (the config's test split and
    degradation) for the LQ input and the cheating reconstructions of
    :func:`sgpn.evaluation.bounds.bound_reconstructions`: what the ``+3 dB`` target of the tiny run asks,
    put next to what a perfect denoiser or face restorer would reach."""
    settings = data_settings(KIT_ROOT / config)
    options = settings.pop("options")
    if set(options) != {"blind"}:
        raise ValueError(f"{config} trains on {sorted(options)}; the bounds are for blind restoration")
    bounds = restoration_bounds(bound_reconstructions(synthetic_faces(**settings), options["blind"]))
    return {"config": config, "images": settings["num_images"],
            **{metric: {BOUND_METHODS[row.method]: round(row.results[metric].value, 2 if metric == "psnr" else 4)
                        for row in bounds.rows} for metric in ("psnr", "ssim")}}


def _rounded(value):
    """Nested dicts and lists of numbers, floats to 4 decimals (integers kept)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def bench_shape(teacher: str = "kit_checkpoints/teacher_tiny.ckpt",
                regressor_lq: str = "kit_checkpoints/regressor_lq_tiny.ckpt", num_images: int = 256) -> dict:
    """The shape prior against the ground truth of the synthetic held-out faces at the kit's
    size and default blind degradation: the mean face, the teacher on HQ and on LQ faces, and
    the LQ regressor (fine-tuned against the frozen teacher) on LQ faces. ``minutes``: the
    training times the checkpoints record."""
    paths = {"teacher": KIT_ROOT / teacher, "regressor_lq": KIT_ROOT / regressor_lq}
    priors = {name: load(path) for name, path in paths.items()}
    size = priors["teacher"].frame_size
    test_set = degraded_test_set(synthetic_faces(size, num_images), "blind")
    rows = shape_rows(priors["teacher"], priors["regressor_lq"], test_set)

    minutes = {name: training_minutes(path) for name, path in paths.items()}
    return {"images": len(test_set["hq"]), "rows": _rounded(rows),
            "minutes": {name: None if m is None else round(m, 1) for name, m in minutes.items()}}


def bench_fit(teacher: str = "kit_checkpoints/teacher_tiny.ckpt", num_images: int = 64) -> dict:
    """Fitting the 257 coefficients by gradient descent (:mod:`sgpn.face3d.fitting`) against the
    teacher's regression on synthetic held-out HQ faces at the kit's size, scored against their
    truth as ``sgpn bench shape`` scores (on the faces MTCNN finds: the fit needs five points);
    and what the fixed contour landmarks alone add to an NME on real faces turned by 0-45°."""
    prior = load(KIT_ROOT / teacher)
    result = fit_rows(prior, degraded_test_set(synthetic_faces(prior.frame_size, num_images), "blind"))
    result["contour_gap_nme"] = {str(yaw): contour_gap_nme(prior.face_model, yaw) for yaw in (0, 15, 30, 45)}
    return {"images": num_images, **_rounded(result), "threads": torch.get_num_threads()}


def bench_landmarks(photos: str | None = None, face_model: str | None = None) -> dict:
    """The 68 landmarks ``sgpn reconstruct`` fits to real photos (default: the portrait that ships
    with matplotlib) against dlib's iBUG 300-W annotator (:mod:`sgpn.evaluation.annotator`), and
    against what the five detector points give with the mean face."""
    source = Path(photos) if photos else Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    check = landmark_check(load_face_model(face_model), source)
    return {"source": source.name, **_rounded(check), "threads": torch.get_num_threads()}


def bench_photo(photo: str | None = None, repeats: int = 3) -> dict:
    """A real photo on the CPU (default: the portrait that ships with matplotlib): milliseconds
    per face of detection, alignment and paste-back without the network, and seconds per face
    end to end with the release's 512 pipeline (the generator and the ResNet-50 shape prior,
    random weights: the same work as the trained ones), and the faces found."""
    path = Path(photo) if photo else Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = read_rgb(path)
    faces = detect_faces(image)
    if not faces:
        raise ValueError(f"no face found in {path}")
    per_face = len(faces)
    crops = [align(image, face.points, 512) for face in faces]

    def paste_all():
        result = image
        for crop, matrix in crops:
            result, _ = paste_back(result, crop, matrix)
        return result

    torch.manual_seed(0)
    pipeline = SGPNRestorer(SGPNGenerator("paper"), ShapePrior(regressor=CoefficientRegressor())).eval()
    start = time.perf_counter()
    for _ in range(repeats):
        restore_photo(pipeline, image)
    end_to_end = (time.perf_counter() - start) / repeats
    return {"photo": path.name, "size": list(image.shape[-2:]), "faces": per_face,
            "detect_ms_per_face": round(median_ms(lambda: detect_faces(image), repeats) / per_face, 1),
            "align_ms_per_face": round(median_ms(lambda: [align(image, f.points, 512) for f in faces], repeats)
                                       / per_face, 1),
            "paste_back_ms_per_face": round(median_ms(paste_all, repeats) / per_face, 1),
            "end_to_end_s_per_face": round(end_to_end / per_face, 2), "threads": torch.get_num_threads()}


def bench_frr(num_images: int = 256, steps: int = 20) -> dict:
    """Face retouching reversal on the committed kit checkpoints
    (:mod:`sgpn.retouch.evaluation`): the retouched input, the U-Net baseline, FMAR alone
    (upsampled) and FMAR + HFDG on ``num_images`` held-out synthetic pairs, FMAR sampling
    ``steps`` DDIM steps. ``minutes``: the training times the checkpoints record;
    ``sampling_s_per_image``: FMAR + HFDG's time per face in batches of 64."""
    evaluation, _, _, seconds = kit_frr_evaluation(num_images, steps)
    keys = {name: key for key, name in FRR_ROWS.items()}
    rows = {keys[row.method]: {"psnr": round(row.results["psnr"].value, 2), "ssim": round(row.results["ssim"].value, 4),
                               "id_error": round(row.results["id_error"].value, 5),
                               "fid": round(row.results["fid"].value, 2)} for row in evaluation.rows}
    minutes = {stage: training_minutes(KIT_CHECKPOINTS / name) for stage, name in FRR_CHECKPOINTS.items()}
    return {"images": num_images, "rows": rows,
            "minutes": {stage: None if m is None else round(m, 1) for stage, m in minutes.items()},
            "sampling_s_per_image": round(seconds, 3), "steps": steps, "threads": torch.get_num_threads()}


BENCHMARKS: dict[str, Callable[[], dict]] = {
    "raster": bench_raster,
    "explorer": bench_explorer,
    "browser": bench_browser,
    "generator": bench_generator,
    "train": bench_train,
    "ablation": bench_ablation,
    "affb": bench_affb,
    "affb-ladder": bench_affb_ladder,
    "affb-curve": bench_affb_curve,
    "bounds": bench_bounds,
    "step": bench_step,
    "paper-step": bench_paper_step,
    "shape": bench_shape,
    "fit": bench_fit,
    "landmarks": bench_landmarks,
    "photo": bench_photo,
    "frr": bench_frr,
}
