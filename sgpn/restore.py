"""Restoring a folder of aligned face crops with a trained SGPN checkpoint (``sgpn restore``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm.auto import tqdm


def output_path(source: str | os.PathLike, input_root: Path, output_root: Path) -> Path:
    """Where the restored copy of ``source`` goes: same relative path, PNG."""
    source = Path(source)
    try:
        relative = source.relative_to(input_root)
    except ValueError:
        relative = Path(source.name)
    return (output_root / relative).with_suffix(".png")


def restore_folder(ckpt: str | os.PathLike, input_dir: str | os.PathLike,
                   output_dir: str | os.PathLike, batch_size: int = 4,
                   device: str | torch.device = "cpu", progress: bool = True) -> list[Path]:
    """Restore every readable face crop under ``input_dir`` into ``output_dir``.

    Crops are resized to the checkpoint's resolution (the data module's rules for odd files
    apply: unreadable ones are reported and skipped). Returns the written paths.
    """
    from sgpn.data import FaceFolder
    from sgpn.checkpoints import load_sgpn

    input_root, output_root = Path(input_dir), Path(output_dir)
    if not input_root.is_dir():
        raise NotADirectoryError(f"input folder not found: {input_root}")
    if input_root.resolve() == output_root.resolve():
        raise ValueError("the output folder must differ from the input folder")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module = load_sgpn(ckpt, map_location=device)
    dataset = FaceFolder(input_root, size=module.size)
    if len(dataset) == 0:
        raise FileNotFoundError(f"no images found in {input_root}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    written = []
    with tqdm(total=len(dataset), desc="restoring", unit="face", disable=not progress) as bar:
        for batch in loader:
            restored = module.restore(batch["hq"].to(device)).output.cpu()
            for image, source in zip(restored, batch["path"]):
                target = output_path(source, input_root, output_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                save_image(image, target)
                written.append(target)
            bar.update(len(restored))
    return written
