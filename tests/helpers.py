"""Builders shared by test files: tiny real-face data sets, their landmark journal, a tiny generator.

Test files import from here (or use the fixtures of ``conftest.py``), never from each other,
so that moving or deleting one test file cannot break another.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.nets import Generator, NetConfig

# In the tiny data set the vipermu crops (one person) are named NNN_<frame number>.png.
VIPERMU = r"crops/\d{3}_\d+\.(?P<kind>png)$"


def tiny_generator() -> tuple[Generator, NetConfig]:
    """A small randomly initialised generator (seed 0): zero edits, paste-back and I/O hold for any G."""
    torch.manual_seed(0)
    cfg = NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)
    return Generator(cfg), cfg


def save_tiny_generator(path: Path) -> Path:
    """``tiny_generator`` saved like a real model, for the commands' ``--weights``."""
    from fgfem.weights import save_generator

    generator, cfg = tiny_generator()
    save_generator(path, generator, cfg)
    return path


def build_tiny_dataset(samples: Path, root: Path, vipermu: int = 16) -> Path:
    """aus.csv + manifest.json + crops/ of 4 GANimation + ``vipermu`` vipermu faces (real AUs)."""
    (root / "crops").mkdir(parents=True, exist_ok=True)
    faces: list[tuple[Path, str, list[float]]] = []
    with open(samples / "ganimation" / "aus_openface.pkl", "rb") as handle:
        labels = pickle.load(handle, encoding="latin1")  # the sample's own pickle, in the shared data
    for image in sorted((samples / "ganimation" / "imgs").glob("*.jpg")):
        faces.append((image, "ganimation", list(labels[image.stem])))
    lines = [line.split() for line in (samples / "vipermu" / "attributes.txt").read_text().splitlines() if line.strip()]
    for parts in lines[:vipermu]:
        faces.append((samples / "vipermu" / "attribute_images" / parts[0], "vipermu", [float(v) for v in parts[1:18]]))
    rows = ["path,source,score," + ",".join(AU_CODES)]
    for i, (image, source, aus) in enumerate(faces):
        rel = f"crops/{i:03d}_{image.stem}.png"
        Image.open(image).convert("RGB").save(root / rel)
        rows.append(f"{rel},{source},1.0," + ",".join(f"{v:.2f}" for v in aus))
    (root / "aus.csv").write_text("\n".join(rows) + "\n")
    manifest = {"size": 128, "template": "fgfem-crop-v1", "backend": "samples", "counts": {"faces": len(faces)},
                "rejects": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_landmark_journal(data: Path) -> int:
    """Give a tiny data set the journal ``fgfem prep`` keeps, with real dlib landmarks of its crops."""
    from dataclasses import asdict

    from fgfem.faces import get_backend
    from fgfem.prep.dataset import JOURNAL_NAME, PrepUnitResult

    backend = get_backend("dlib")
    lines = []
    for crop in sorted((data / "crops").glob("*.png")):
        rgb = np.asarray(Image.open(crop).convert("RGB"))
        box = np.array([[5.0, 5.0, rgb.shape[1] - 5.0, rgb.shape[0] - 5.0, 1.0]])
        face = backend.landmarks_for_boxes(rgb, box)[0]
        row = {"path": f"crops/{crop.name}", "source": crop.name, "score": 1.0, "aus": [0.0] * NUM_AUS,
               "landmarks": np.round(face.landmarks, 2).tolist()}
        lines.append(json.dumps(asdict(PrepUnitResult(source=crop.name, rows=[row]))))
    (data / JOURNAL_NAME).write_text("\n".join(lines) + "\n")
    return len(lines)
