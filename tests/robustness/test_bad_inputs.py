"""Every subcommand against a corpus of bad, odd and hostile inputs (``tests/badinputs.py``), in-process.

Each (case, subcommand) run must: exit 0 for valid-but-unusual inputs; otherwise exit
non-zero with exactly one ``error: ...`` line (a folder: skips with reasons and a summary);
never print a traceback; leave its inputs byte-identical; and leave no half-written
output behind (``*.partial-*`` files, or the output name after a failure). Where a case is
about a property of the output (a video's start offset, frame times, SAR, size, what the
summary says), ``OUTPUT_CHECKS`` reads it back from the written file with ffmpeg.

The default run covers every case against the subcommands that read its kind of input
but keeps the costly ones (face detection plus a generator per run) to the cheapest
subcommand; ``--runslow`` runs the whole cross product.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from badinputs import (
    Case,
    audio_span,
    build_corpus,
    frame_times,
    short_clip,
    small_face_photo,
    tree_digest,
    video_summary,
)

from fgfem.cli import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TRAIN_ARGS = ("--preset", "lite", "--size", "64", "--batch", "2", "--conv-dim", "8", "--critic-dim", "8",
              "--max-steps", "1", "--save-every", "1", "--preview-every", "1000", "--device", "cpu", "--quiet")
COMMON = ("--device", "cpu", "--backend", "dlib")


@dataclass
class Corpus:
    root: Path
    cases: list[Case]
    good_face: Path
    good_clip: Path
    weights: Path
    digest: dict[bytes, str]

    def by_name(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)


@pytest.fixture(scope="module")
def corpus(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("badinputs")
    cases = build_corpus(root / "cases", samples)
    good = root / "good"
    good.mkdir()
    face = good / "face.jpg"
    small_face_photo(samples).save(face, quality=92)
    clip = short_clip(samples, good / "clip.mp4", frames=4, width=240)
    weights = root / "cases" / "weights" / "good.safetensors"
    return Corpus(root, cases, face, clip, weights, tree_digest(root))


# ------------------------------------------------------------------------------------------ running
RESULTS: dict[tuple[str, str], str] = {}
"""(case, command) -> outcome, filled as the tests run, reported by the last test."""


def argv_for(case: Case, command: str, corpus: Corpus, out: Path) -> tuple[list[str], list[Path]]:
    """The command line for ``case`` under ``command``, and the outputs it would create."""
    weights = ("--weights", str(corpus.weights))
    src = case.fspath if case.path is not None else None
    if case.kind == "weights":
        weights = ("--weights", case.fspath)
    au = case.args if case.kind == "au" else ("--au", "12=+1")
    if command in ("edit", "edit-target"):
        if case.kind == "folder":
            dest = out / "edited"
            return ["edit", src, "-o", str(dest), *au, *weights, *COMMON], [dest]
        name = os.path.basename(src) if case.kind == "image" and command == "edit" else "out.jpg"
        dest = out / (os.path.splitext(name)[0] + ".png")
        if command == "edit-target":
            return ["edit", str(corpus.good_face), "--target", src, "-o", str(dest), *weights, *COMMON], [dest]
        source = src if case.kind in ("image", "folder") else str(corpus.good_face)
        return ["edit", source, "-o", str(dest), *au, *weights, *COMMON], [dest]
    if command == "interpolate":
        source = src if case.kind == "image" else str(corpus.good_face)
        dest = out / "anim.gif"
        return ["interpolate", source, "--steps", "0,1", "--size", "64", "-o", str(dest), *au, *weights,
                *COMMON], [dest]
    if command == "aus":
        dest = out / "aus.csv"
        return ["aus", src, "-o", str(dest), "--backend", "dlib"], [dest]
    if command == "prep":
        return ["prep", src, str(out / "data"), "--backend", "dlib"], []
    if command == "render":
        source = src if case.kind in ("image", "video") else str(corpus.good_clip)
        dest = out / (case.out_name or "out.mp4")
        return ["render", source, "-o", str(dest), *au, *weights, *COMMON], [dest]
    if command == "render-driver":
        dest = out / "driven.mp4"
        return ["render", str(corpus.good_clip), "--driver", src, "-o", str(dest), *weights, *COMMON], [dest]
    if command == "weights-show":
        return ["weights", "show", src], []
    if command == "weights-convert":
        dest = out / "converted.safetensors"
        return ["weights", "convert", src, str(dest), "--preset", "lite"], [dest]
    if command == "eval":
        data = src if case.kind == "dataset" else corpus.by_name("dataset-extra-header-column").fspath
        dest = out / "metrics.json"
        limit = ("--limit", "2") if case.kind != "dataset" else ()  # a bad row may be the last one
        return ["eval", data, *weights, *limit, "--aus", "12", "--no-identity", "--device", "cpu",
                "-o", str(dest)], [dest]
    if command == "train":
        return ["train", src, "--run", str(out / "run"), *TRAIN_ARGS], []
    raise AssertionError(f"no command line for {command}")


def partial_files(folder: Path) -> list[str]:
    return [os.fsdecode(os.path.join(d, n)) for d, _s, names in os.walk(os.fsencode(str(folder)))
            for n in names if b".partial-" in n]


def check(case: Case, command: str, corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run one (case, command) pair and assert the error policy; record the outcome."""
    out = tmp_path / "out"
    out.mkdir()
    argv, outputs = argv_for(case, command, corpus, out)
    for name, data in case.prior:
        (out / name).write_bytes(data)
        (out / name).chmod(0o600)
    before = tree_digest(corpus.root / "cases")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    expected = case.expected(command)
    where = f"{case.name} x {command}: exit {code}\n--- stdout\n{captured.out}\n--- stderr\n{captured.err}"
    assert "Traceback" not in text, where
    assert code != 2 and "unexpected" not in captured.err, f"a bug, not a clear error: {where}"
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    if expected == "ok":
        assert code == 0, where
    elif expected == "error":
        assert code != 0, where
        assert len(errors) == 1, where
        assert len(errors[0]) > len("error: ") + 10, where
    elif expected == "partial":
        assert code == 1, where
        assert "skipped" in text and "of" in text, where
    else:  # either: success, or one clear line
        assert code == 0 or len(errors) == 1, where
    assert tree_digest(corpus.root / "cases") == before, f"{where}\ninputs were modified"
    assert not partial_files(out), f"{where}\npartial files left: {partial_files(out)}"
    if code != 0 and expected != "partial":
        for path in outputs:
            assert not path.exists() or path.is_dir() and not any(path.iterdir()), f"{where}\n{path} left behind"
    output_check = OUTPUT_CHECKS.get(case.name)
    if output_check is not None and command in ("render", "aus"):
        output_check(case, command, outputs[0], " ".join(text.split()))
    RESULTS[(case.name, command)] = "ok" if code == 0 else f"exit {code}"


# ------------------------------------------------------------------------------------------ output checks
FRAME = 1 / 30  # the sample clips' frame interval


def _aus_times(table: Path) -> list[tuple[int, float]]:
    with table.open(newline="") as handle:
        return [(int(row["frame"]), float(row["time_s"])) for row in csv.DictReader(handle)]


def _keeps_timing(case: Case, command: str, dest: Path, text: str) -> None:
    """Every frame at its input time (aus: its ``time_s``), and the sound where it was: within half a frame."""
    want = frame_times(case.fspath)
    if command == "aus":
        rows = _aus_times(dest)
        assert len(rows) > len(want) // 2, f"{case.name}: {len(rows)} rows for {len(want)} frames"
        assert max(abs(time - want[frame]) for frame, time in rows) < 0.5 * FRAME, rows
        return
    got = frame_times(dest)
    assert len(got) == len(want), f"{case.name}: {len(got)} frames out of {len(want)}"
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 0.5 * FRAME, (want, got)
    sound_in, sound_out = audio_span(case.fspath), audio_span(dest)
    assert sound_in is not None and sound_out is not None, f"{case.name}: the sound was lost"
    assert abs((got[0] - sound_out[0]) - (want[0] - sound_in[0])) < 0.5 * FRAME, (want[0], sound_in, got[0], sound_out)


def _keeps_sar_and_colour(case: Case, command: str, dest: Path, text: str) -> None:
    if command == "render":
        line = video_summary(dest)
        assert "480x360 [SAR 4:3 DAR 16:9]" in line and "bt709" in line and "unknown" not in line, line


def _pads_odd_size(case: Case, command: str, dest: Path, text: str) -> None:
    if command == "render":
        assert "642x362" in video_summary(dest) and "641x361 padded to 642x362" in text, (video_summary(dest), text)


def _says_audio_cut(case: Case, command: str, dest: Path, text: str) -> None:
    assert re.search(r"audio cut at the video's end: 1\.\d\d s of its 2\.4\d s kept", text), text
    span = audio_span(dest)
    assert span is not None and span[1] < 1 + 2 * FRAME, span


def _writes_every_frame(case: Case, command: str, dest: Path, text: str) -> None:
    assert len(frame_times(dest)) == len(frame_times(case.fspath)), video_summary(dest)
    if dest.suffix == ".gif":
        assert "no sound" in text, text
    else:
        assert audio_span(dest) is not None, f"{dest.name} lost the sound"


def _lists_the_formats(case: Case, command: str, dest: Path, text: str) -> None:
    assert "name the output .mp4, .m4v, .mov, .mkv, .webm, .avi or .gif" in text, text


def _removes_stale_partial(case: Case, command: str, dest: Path, text: str) -> None:
    (name, _), = case.prior
    assert f"removed 1 partial file of an interrupted earlier run ({name})" in text, text
    assert not (dest.parent / name).exists()


OUTPUT_CHECKS: dict[str, Callable[[Case, str, Path, str], None]] = {
    "video-start-offset": _keeps_timing,
    "video-variable-rate": _keeps_timing,
    "video-sar-bt709": _keeps_sar_and_colour,
    "video-odd-size": _pads_odd_size,
    "video-audio-longer": _says_audio_cut,
    "video-output-gif": _writes_every_frame,
    "video-output-webm": _writes_every_frame,
    "video-output-avi": _writes_every_frame,
    "video-output-flv": _lists_the_formats,
    "video-stale-partial": _removes_stale_partial,
}
"""(case, command, the output path, the command's output on one line) -> assertions on what was written."""


# ------------------------------------------------------------------------------------------ selection
# Valid-looking images cost a face detection and a generator pass per run; by default they run
# against `edit` and `aus` only (the two readers every other image command shares), the rest in --runslow.
EXPENSIVE = {"png-16bit-grey", "cmyk-jpeg", "rgba-png", "greyscale-jpeg", "palette-png", "exif-rotated",
             "animated-gif", "thirty-faces", "png-named-jpg", "non-utf8-name", "mixed-folder", "video-no-face",
             "video-truncated", "dataset-extra-header-column", "jpeg-named-heic", "small-face-large-photo",
             "weights-train-checkpoint", "weights-run-folder", "video-start-offset", "video-variable-rate",
             "video-sar-bt709", "video-odd-size"}
CHEAP_COMMANDS_FOR_EXPENSIVE = {"edit", "aus", "render", "train", "eval"}


def _pairs(corpus_cases: list[Case], *, slow: bool) -> list[tuple[str, str]]:
    pairs = []
    for case in corpus_cases:
        for command in case.commands():
            costly = case.name in EXPENSIVE and command not in CHEAP_COMMANDS_FOR_EXPENSIVE
            if costly == slow:
                pairs.append((case.name, command))
    return pairs


def _case_list() -> list[Case]:
    """The case list without writing any file: names and kinds only (build_corpus on a dry folder)."""
    from badinputs import RENDER_ONLY, _au_cases

    names = {
        "image": ["empty-file", "text-as-jpg", "truncated-jpeg", "truncated-png", "png-16bit-grey", "cmyk-jpeg",
                  "rgba-png", "greyscale-jpeg", "palette-png", "exif-rotated", "one-pixel", "bomb-20000x20000",
                  "animated-gif", "face-too-small", "no-face", "thirty-faces", "png-named-jpg", "garbage-bytes",
                  "wrong-suffix", "huge-strip", "jpeg-named-heic", "upside-down-face", "small-face-large-photo",
                  "missing-file", "folder-named-jpg", "non-utf8-name"],
        "folder": ["mixed-folder", "empty-folder", "folder-all-bad"],
        "video": ["video-random-bytes", "video-empty-file", "video-text", "video-truncated", "video-audio-only",
                  "video-missing", "video-no-face", "video-start-offset", "video-variable-rate", "video-sar-bt709",
                  "video-odd-size", "video-audio-longer", "video-output-gif", "video-output-webm",
                  "video-output-avi", "video-output-flv", "video-stale-partial"],
        "weights": ["weights-truncated", "weights-empty", "weights-pickle-disguised", "weights-plain-pickle",
                    "weights-header-lies", "weights-other-preset", "weights-no-metadata", "weights-missing",
                    "weights-train-checkpoint", "weights-run-folder"],
        "dataset": ["dataset-missing-au-column", "dataset-extra-header-column", "dataset-row-with-extra-field",
                    "dataset-nan-aus", "dataset-text-aus", "dataset-empty-csv", "dataset-header-only",
                    "dataset-missing-image", "dataset-corrupt-image", "dataset-binary-csv",
                    "dataset-missing-folder"],
    }
    cases = [Case(name, kind, "error", only=("render",) if name in RENDER_ONLY else ())
             for kind, items in names.items() for name in items]
    return cases + _au_cases()


FAST_PAIRS = _pairs(_case_list(), slow=False)
SLOW_PAIRS = _pairs(_case_list(), slow=True)


@pytest.mark.parametrize(("name", "command"), FAST_PAIRS, ids=[f"{n}-{c}" for n, c in FAST_PAIRS])
def test_bad_input(name: str, command: str, corpus: Corpus, tmp_path: Path, capsys) -> None:
    check(corpus.by_name(name), command, corpus, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "command"), SLOW_PAIRS, ids=[f"{n}-{c}" for n, c in SLOW_PAIRS])
def test_bad_input_exhaustive(name: str, command: str, corpus: Corpus, tmp_path: Path, capsys) -> None:
    check(corpus.by_name(name), command, corpus, tmp_path, capsys)


# ------------------------------------------------------------------------------------------ specifics
def test_case_list_matches_the_corpus(corpus: Corpus) -> None:
    """The parametrised names and subcommands above are exactly the cases the generator builds."""
    assert sorted((c.name, c.commands()) for c in corpus.cases) == sorted((c.name, c.commands()) for c in _case_list())


def test_real_media_videos_are_what_they_claim(corpus: Corpus) -> None:
    """The clips the timing and geometry cases render really have the property the output check looks for."""
    offset = corpus.by_name("video-start-offset").fspath
    sound = audio_span(offset)
    assert frame_times(offset)[0] == pytest.approx(0.84, abs=1e-3)
    assert sound is not None and sound[0] == pytest.approx(0, abs=0.03)  # AAC's priming samples start just before 0
    times = frame_times(corpus.by_name("video-variable-rate").fspath)
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    assert gaps[:45] == pytest.approx([FRAME] * 45, abs=1e-3) and gaps[45:] == pytest.approx([3 * FRAME] * 4, abs=1e-3)
    line = video_summary(corpus.by_name("video-sar-bt709").fspath)
    assert "yuv420p(tv, bt709, progressive), 480x360 [SAR 4:3 DAR 16:9]" in line, line
    assert "641x361" in video_summary(corpus.by_name("video-odd-size").fspath)
    long_audio = corpus.by_name("video-audio-longer").fspath
    assert frame_times(long_audio)[-1] < 1 and audio_span(long_audio)[1] > 2.3
    (name, data), = corpus.by_name("video-stale-partial").prior
    pid = int(name.split("-")[2])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # its writer is gone
    assert 0 < len(data) < os.path.getsize(corpus.by_name("video-stale-partial").fspath)


def test_bomb_is_refused_before_decoding(corpus: Corpus, capsys) -> None:
    import tracemalloc

    tracemalloc.start()
    code = run(["aus", corpus.by_name("bomb-20000x20000").fspath, "--backend", "dlib"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 1
    assert "400.0 MP is above the 100 MP safety limit" in " ".join(capsys.readouterr().err.split())
    assert peak < 200e6  # the 1.2 GB of pixels were never allocated


def test_non_utf8_output_name_is_written(corpus: Corpus, tmp_path: Path, capsys) -> None:
    """A Latin-1 file name survives the round trip: the edit is written beside it under a matching name."""
    case = corpus.by_name("non-utf8-name")
    folder = tmp_path / "in"
    folder.mkdir()
    src = os.fsencode(str(folder)) + b"/" + os.path.basename(case.path)
    shutil.copy(case.path, src)
    assert run(["edit", os.fsdecode(src), "--au", "12=+1", "--weights", str(corpus.weights), *COMMON]) == 0
    written = [n for n in os.listdir(os.fsencode(str(folder))) if n != os.path.basename(src)]
    assert written == [b"visage_\xe9t\xe9_\xff_edited.jpg"]
    assert "\\xe9" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("name", ["weights-pickle-disguised", "weights-plain-pickle"])
def test_weights_are_never_unpickled(name: str, corpus: Corpus, tmp_path: Path, monkeypatch, capsys) -> None:
    """A pickle renamed .safetensors is refused by its first bytes: nothing ever unpickles it."""
    import pickle

    import torch

    calls: list[str] = []

    def spy(what: str):
        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(what)
            raise AssertionError(f"{what} called on a weights file")

        return refuse

    for module, attr in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, attr, spy(f"{module.__name__}.{attr}"))
    weights = corpus.by_name(name).fspath
    out = tmp_path / "out.jpg"
    for argv in (["edit", str(corpus.good_face), "--au", "12=+1", "--weights", weights, "-o", str(out), *COMMON],
                 ["weights", "show", weights]):
        assert run(argv) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert "never unpickles" in " ".join(err.split()) or "not a safetensors" in err, err
    assert calls == []
    assert not out.exists()


def test_no_traceback_end_to_end(corpus: Corpus, tmp_path: Path) -> None:
    """Through a real process (stderr as a user sees it): a disguised pickle and a truncated PNG."""
    for argv in (["weights", "show", corpus.by_name("weights-pickle-disguised").fspath],
                 ["aus", corpus.by_name("truncated-png").fspath, "--backend", "dlib"]):
        proc = subprocess.run([sys.executable, "-m", "fgfem", *argv], capture_output=True, timeout=300,
                              env={**os.environ, "COLUMNS": "80"})
        err = proc.stderr.decode("utf-8", "replace")
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 1, err
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err


def subcommand(command: str) -> str:
    """``edit-target`` and ``render-driver`` are other inputs of the same subcommand."""
    return {"edit-target": "edit", "render-driver": "render", "weights-show": "weights show",
            "weights-convert": "weights convert"}.get(command, command)


def test_zz_summary(capsys) -> None:
    """Report the coverage: the planned matrix, and what this session actually ran (runs last in the module)."""
    planned = FAST_PAIRS + SLOW_PAIRS
    cases = {name for name, _ in planned}
    commands = {subcommand(command) for _, command in planned}
    per_command: dict[str, int] = defaultdict(int)
    for _, command in planned:
        per_command[subcommand(command)] += 1
    ran = {pair for pair in planned if pair in RESULTS}
    lines = [f"bad-input corpus: {len(cases)} cases x {len(commands)} subcommands = {len(planned)} runs "
             f"({len(FAST_PAIRS)} by default, {len(SLOW_PAIRS)} more with --runslow); {len(ran)} ran clean here"]
    lines += [f"  {command:16s} {count:3d} cases" for command, count in sorted(per_command.items())]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert len(cases) >= 30 and len(commands) >= 6
    assert {name for name, _ in FAST_PAIRS} == cases  # every case runs at least once by default
