"""The ``sgpn`` console command.

``sgpn fit|validate|test|predict ...`` is Lightning's CLI (``sgpn fit --config configs/tiny.yaml``,
``sgpn fit --config configs/tiny.yaml --ckpt_path last`` to resume); the other subcommands are
the kit's own: ``prepare``, ``reconstruct``, ``bench``, ``figures``, ``evaluate``, ``restore`` and ``export``.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from dataclasses import replace
from unittest import mock

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from sgpn.app.page import serve
from sgpn.bench import BENCHMARKS
from sgpn.checkpoints import kit_model_notice, load
from sgpn.evaluation.scoring import evaluate_command
from sgpn.evaluation.tables import TASKS
from sgpn.figures import make_figures
from sgpn.face3d.face_model import load_face_model
from sgpn.photo.detection import FACE_THRESHOLD
from sgpn.photo.prepare import MIN_FACE_PX, prepare_faces
from sgpn.photo.reconstruct import PHOTO_FIT, reconstruct_photos
from sgpn.photo.restore import restore_folder, restore_photos
from sgpn.training.export import export_checkpoint

#: Subcommands handed to Lightning's CLI.
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(args: list[str], **kwargs):
    """Lightning's CLI over any LightningModule and LightningDataModule named in the config
    (``model: class_path: sgpn.training.SGPNModule``), with the Trainer's options.
    ``kwargs`` go to ``LightningCLI`` (e.g. ``run=False`` to build without running).

    ``args`` are the whole command line. When they are not the process's own (a notebook calls
    this inside a Jupyter kernel), ``sys.argv`` is hidden from Lightning, which would otherwise
    warn that both were given; from the shell it stays, since DDP's launcher re-runs it."""
    own_command_line = sys.argv[1:] == list(args)
    with nullcontext() if own_command_line else mock.patch.object(sys, "argv", sys.argv[:1]):
        return LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                            subclass_mode_data=True, args=args, auto_configure_optimizers=False,
                            save_config_kwargs={"overwrite": True}, **kwargs)


def _bench(args: argparse.Namespace) -> int:
    for name in args.names:
        options = {}
        if name == "train" and args.out:
            options["out"] = args.out
        if name == "landmarks" and args.photos:
            options["photos"] = args.photos
        print(json.dumps({"bench": name.replace("-", "_"), **BENCHMARKS[name](**options)}), flush=True)
    return 0


def _figures(args: argparse.Namespace) -> int:
    for path in make_figures(args.out, args.names or None, num_images=args.num_images):
        print(path)
    return 0


def _restore(args: argparse.Namespace) -> int:
    if (args.ckpt is None) == (args.official is None):
        raise SystemExit("give either a kit checkpoint (--ckpt) or the folder of the official weights (--official)")
    if args.aligned and args.ckpt is None:
        raise SystemExit("--aligned restores with a kit checkpoint (--ckpt)")
    module = load(args.official or args.ckpt, args.device)
    notice = kit_model_notice(args.official or args.ckpt)
    if notice:
        print(f"note: {notice}")
    if args.aligned:
        written = restore_folder(module, args.input, args.output, batch_size=args.batch_size)
        print(f"{len(written)} restored faces in {args.output}")
        return 0
    report = restore_photos(module, args.input, args.output, threshold=args.threshold, details=args.details)
    print(f"{len(report['restored'])} photo(s) restored, {len(report['no_face'])} without a face (copied "
          f"unchanged), {len(report['skipped'])} skipped, in {args.output}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    report = prepare_faces(args.photos, args.out, size=args.size, min_face=args.min_face,
                           threshold=args.threshold, fractions=(args.val, args.test))
    print(report.summary())
    for split in ("val", "test"):
        if not report.totals[split]:
            print(f"note: no photo went to {split}/; sgpn fit needs faces there (more photos, or a larger --{split})")
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    settings = replace(PHOTO_FIT, steps=args.steps, coarse_steps=min(PHOTO_FIT.coarse_steps, args.steps // 3))
    report = reconstruct_photos(load_face_model(args.face_model), args.input, args.output, threshold=args.threshold,
                                settings=settings)
    print(f"{len(report['written'])} photo(s) fitted, {len(report['no_face'])} without a face, "
          f"{len(report['skipped'])} skipped, in {args.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    path = export_checkpoint(args.source, args.target, compact=args.compact)
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def _app(args: argparse.Namespace) -> int:
    return serve(args.port, args.open)


def _evaluate(args: argparse.Namespace) -> int:
    written = evaluate_command(args.ckpt, args.tasks, config=args.config, pair=args.pair, unpaired=args.unpaired,
                               num_images=args.num_images, teacher=args.teacher, lpips=not args.no_lpips,
                               fid=not args.no_fid, out=args.out, name=args.name, caption=args.caption)
    print(written[0].read_text())
    print("written:", ", ".join(map(str, written)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgpn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in LIGHTNING_SUBCOMMANDS:  # listed for --help; main() hands them to Lightning
        sub.add_parser(name, help=f"Lightning CLI: sgpn {name} --config CONFIG (see sgpn {name} --help)")
    prepare = sub.add_parser("prepare", help="raw photos -> aligned faces in train/val/test folders (FFHQ-style)")
    prepare.add_argument("photos", help="a photo or a folder of photos (searched recursively)")
    prepare.add_argument("out", help="the training folder to write (new, or one sgpn prepare wrote)")
    prepare.add_argument("--size", type=int, default=512, help="crop size in pixels (the paper: 512)")
    prepare.add_argument("--min-face", type=int, default=MIN_FACE_PX,
                         help="skip faces whose detector box is narrower (pixels)")
    prepare.add_argument("--threshold", type=float, default=FACE_THRESHOLD, help="face probability to accept")
    prepare.add_argument("--val", type=float, default=0.05, help="share of photos for validation")
    prepare.add_argument("--test", type=float, default=0.05, help="share of photos for test")
    prepare.set_defaults(func=_prepare)
    reconstruct = sub.add_parser("reconstruct", help="fit the 257 coefficients to every face of photos")
    reconstruct.add_argument("input", help="a photo or a folder of photos")
    reconstruct.add_argument("output", help="folder for <name>.json (faces, coefficients, 68 landmarks) and <name>_fit.png")
    reconstruct.add_argument("--threshold", type=float, default=FACE_THRESHOLD, help="face probability to accept")
    reconstruct.add_argument("--steps", type=int, default=PHOTO_FIT.steps, help="Adam steps of the fit")
    reconstruct.add_argument("--face-model", help="a Basel Face Model .mat (default: $SGPN_BFM, else the kit's built-in model)")
    reconstruct.set_defaults(func=_reconstruct)
    bench = sub.add_parser("bench", help="run benchmarks; each prints one JSON line")
    bench.add_argument("names", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                       help=f"one or more of: {', '.join(sorted(BENCHMARKS))}")
    bench.add_argument("--out", help="train: run in this folder and keep it (default: a scratch folder)")
    bench.add_argument("--photos", help="landmarks: a photo or a folder of photos (default: matplotlib's portrait)")
    bench.set_defaults(func=_bench)
    figures = sub.add_parser("figures", help="regenerate the kit's figures headless")
    figures.add_argument("names", nargs="*", help="figure names (default: all)")
    figures.add_argument("--out", default="figures", help="output folder")
    figures.add_argument("--num-images", type=int, default=256,
                         help="held-out faces behind the statistics (the ablation table: twice as many)")
    figures.set_defaults(func=_figures)
    restore = sub.add_parser("restore", help="restore the faces of whole photos (or aligned crops)")
    weights = restore.add_mutually_exclusive_group(required=True)
    weights.add_argument("--ckpt", help="SGPN checkpoint written by sgpn fit (or a kit checkpoint)")
    weights.add_argument("--official", metavar="DIR", help="the release's checkpoints/ folder: sgpn.pth, "
                         "d3dfr_finetune_ours.pth and BFM/BFM09_model_info.mat (or BFM_model_front.mat)")
    restore.add_argument("input", help="a photo or a folder of photos (with --aligned: of aligned face crops)")
    restore.add_argument("output", help="folder for the results (PNG, same names)")
    restore.add_argument("--aligned", action="store_true",
                         help="the inputs are aligned face crops: resize and restore them whole")
    restore.add_argument("--threshold", type=float, help="face probability to accept (default 0.95)")
    restore.add_argument("--details", action="store_true",
                         help="also write each face's aligned crop, I_3d, restored crop and AFFB masks")
    restore.add_argument("--batch-size", type=int, default=4, help="--aligned: crops per forward pass")
    restore.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    restore.set_defaults(func=_restore)
    evaluate = sub.add_parser("evaluate", help="score checkpoints and baselines; markdown and CSV tables")
    evaluate.add_argument("--ckpt", action="append", required=True, metavar="[NAME=]PATH",
                          help="an SGPN checkpoint (repeat for several rows, e.g. full=... A=...)")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--config", help="training config whose synthetic data to use (size, test set)")
    source.add_argument("--pair", nargs=2, metavar=("LQ_DIR", "HQ_DIR"),
                        help="a folder of LQ crops and one of their HQ originals (same file names)")
    source.add_argument("--unpaired", nargs=2, metavar=("LQ_DIR", "REFERENCE_DIR"),
                        help="real LQ crops without originals (e.g. WebPhoto-Test), scored by FID/KID "
                             "against a reference folder (e.g. FFHQ's first N; its features are cached)")
    evaluate.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS,
                          help="synthetic tasks (default: all)")
    evaluate.add_argument("--num-images", type=int, help="held-out images (default: the config's test_length)")
    evaluate.add_argument("--teacher", help="teacher checkpoint for the NME (default: the first checkpoint's)")
    evaluate.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    evaluate.add_argument("--no-fid", action="store_true", help="skip FID and KID (one Inception forward per image)")
    evaluate.add_argument("--out", default="results", help="output folder")
    evaluate.add_argument("--name", default="evaluation", help="file name of the tables (.md, .csv)")
    evaluate.add_argument("--caption", default="", help="text above the markdown table")
    evaluate.set_defaults(func=_evaluate)
    app = sub.add_parser("app", help="serve the explorer and photo restorer as a web page (Voila, localhost)")
    app.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1")
    app.add_argument("--open", action="store_true", help="open the page in the default browser")
    app.set_defaults(func=_app)
    export = sub.add_parser("export", help="copy a checkpoint without optimiser and loop state")
    export.add_argument("source", help="checkpoint written by sgpn fit")
    export.add_argument("target", help="where to write the small copy")
    export.add_argument("--compact", action="store_true",
                        help="store float16 (SGPN: also leave out the discriminator and teacher)")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
