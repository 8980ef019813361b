"""`fgfem render` on real videos: same frames/fps/duration, audio kept, face-less frames unchanged, drivers."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fgfem.aus import NUM_AUS, parse_au_specs
from fgfem.cli import run
from fgfem.editor import Editor
from fgfem.pipeline import default_compute_threads, limited_threads
from fgfem.render import FaceTracker, TrackerConfig, driver_deltas, edit_frames, render_video
from fgfem.video import ffmpeg_exe, iter_frames, probe_video


def ffmpeg(*args: object) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True, timeout=120)


@pytest.fixture(scope="module")
def short_clip(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 frames of WolfgangLanger_Pexels.mp4 (a real face, 640x360, 23.98 fps), re-encoded."""
    out = tmp_path_factory.mktemp("clips") / "wolfgang12.mp4"
    ffmpeg("-i", samples / "pyfeat" / "WolfgangLanger_Pexels.mp4", "-frames:v", 12, "-an",
           "-c:v", "libx264", "-crf", 12, "-pix_fmt", "yuv420p", out)
    return out


@pytest.fixture(scope="module")
def clip_with_audio(short_clip: Path) -> Path:
    """Six frames of the short clip with a 440 Hz sine tone muxed in as an AAC audio stream."""
    out = short_clip.with_name("wolfgang6_tone.mp4")
    ffmpeg("-i", short_clip, "-f", "lavfi", "-i", "sine=frequency=440:duration=0.25", "-frames:v", 6,
           "-c:v", "libx264", "-crf", 12, "-c:a", "aac", out)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_short_clip_keeps_frames_fps_and_duration(editor: Editor, short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    stats = render_video(editor, short_clip, out, parse_au_specs(["12=+2"]), batch=5)
    before, after = probe_video(short_clip), probe_video(out)
    assert after.frame_count == before.frame_count == stats.frames == 12
    assert after.fps == pytest.approx(before.fps, rel=1e-3)
    assert after.duration == pytest.approx(before.duration, abs=0.05)
    assert after.size == before.size
    assert stats.edited == 12  # the face is in every frame
    assert stats.detections < 12  # tracked between detections, not detected every frame


def test_zero_edit_video_is_the_input_up_to_the_codec(editor: Editor, short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "same.mp4"
    render_video(editor, short_clip, out, parse_au_specs(["12=+2"]), intensity=0.0)
    for a, b in zip(iter_frames(short_clip), iter_frames(out), strict=True):
        assert psnr(a, b) > 38


def test_audio_stream_is_kept(editor: Editor, clip_with_audio: Path, tmp_path: Path) -> None:
    assert probe_video(clip_with_audio).has_audio
    out = tmp_path / "with_audio.mp4"
    render_video(editor, clip_with_audio, out, parse_au_specs(["12=+1"]), batch=6)
    assert probe_video(out).has_audio
    silent = tmp_path / "silent.mp4"
    render_video(editor, clip_with_audio, silent, parse_au_specs(["12=+1"]), keep_audio=False)
    assert not probe_video(silent).has_audio


def test_frames_without_a_face_pass_through_bit_exactly(editor: Editor, samples: Path) -> None:
    """face_noface.mov: a face, then a cartoon title; frames with no face must come back untouched."""
    src = samples / "pyfeat" / "face_noface.mov"
    every = 12  # every 12th frame keeps the test fast; the tracker still sees them as a sequence
    frames = [f for i, f in enumerate(iter_frames(src)) if i % every == 0]
    tracker = FaceTracker(editor.backend, TrackerConfig(redetect_every=1))
    edited = list(edit_frames(editor, frames, lambda _i: parse_au_specs(["12=+2"]), tracker=tracker, batch=4))
    detector_sees = [bool(editor.backend.detect(f)) for f in frames]
    assert any(detector_sees) and not all(detector_sees)
    for frame, result, has_face in zip(frames, edited, detector_sees, strict=True):
        assert (result.faces > 0) == has_face
        if not has_face:
            assert result.rgb is frame or np.array_equal(result.rgb, frame)
        else:
            assert not np.array_equal(result.rgb, frame)


def test_tracker_redetects_after_a_cut(editor: Editor, samples: Path) -> None:
    frames = list(iter_frames(samples / "pyfeat" / "face_noface.mov"))
    cut = next(i for i in range(1, len(frames)) if np.abs(frames[i].astype(int) - frames[i - 1]).mean() > 30)
    tracker = FaceTracker(editor.backend, TrackerConfig(redetect_every=1000))
    found = [len(tracker.update(f)) for f in frames[cut - 3: cut + 3]]
    assert found[:3] == [1, 1, 1] and found[3:] == [0, 0, 0]



@pytest.mark.parametrize("face", ["largest", "all"])
def test_tracker_asks_for_the_largest_face_only_when_it_keeps_only_that(editor: Editor, short_clip: Path,
                                                                         face: str, monkeypatch) -> None:
    """`--face largest` (the default) lets the backend skip checks of faces it could not choose; the face
    followed must still be the one a full detection picks."""
    calls: list[str] = []
    backend = editor.backend
    for name in ("detect", "detect_largest"):
        real = getattr(backend, name)
        monkeypatch.setattr(backend, name, lambda rgb, _real=real, _name=name: calls.append(_name) or _real(rgb))
    frames = list(iter_frames(short_clip))[:3]
    tracker = FaceTracker(backend, TrackerConfig(redetect_every=1, face=face, smooth=False))
    followed = [tracker.update(f) for f in frames]
    assert calls.count("detect_largest") == (3 if face == "largest" else 0)
    monkeypatch.undo()
    for frame, faces in zip(frames, followed, strict=True):
        full = max(editor.backend.detect(frame), key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        assert len(faces) == 1 and np.allclose(faces[0].box[:4], full.box[:4], atol=1.0)

def test_driver_deltas_are_relative_to_the_neutral_frame(editor: Editor, short_clip: Path) -> None:
    deltas = driver_deltas(editor, short_clip, neutral=3)
    assert deltas.shape == (12, NUM_AUS)
    assert np.allclose(deltas[3], 0)
    with pytest.raises(Exception, match="--driver-neutral"):
        driver_deltas(editor, short_clip, neutral=99)


def test_cli_render_with_driver(short_clip: Path, tmp_path: Path, capsys) -> None:
    from fgfem.nets import Generator, NetConfig
    from fgfem.weights import save_generator

    cfg = NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)
    weights = tmp_path / "tiny.safetensors"
    save_generator(weights, Generator(cfg), cfg)
    out = tmp_path / "driven.mp4"
    code = run(["render", str(short_clip), "--driver", str(short_clip), "-o", str(out), "--weights", str(weights),
                "--device", "cpu", "--backend", "dlib", "--batch", "4"])
    assert code == 0, capsys.readouterr().err
    assert probe_video(out).frame_count == 12
    assert run(["render", str(short_clip), "-o", str(out), "--au", "12=+1", "--weights", str(weights)]) == 1
    assert "--force" in capsys.readouterr().err
    slow_out = tmp_path / "slow_preset.mp4"
    code = run(["render", str(short_clip), "-o", str(slow_out), "--au", "12=+1", "--weights", str(weights),
                "--device", "cpu", "--backend", "dlib", "--encoder-preset", "slow"])
    assert code == 0, capsys.readouterr().err
    assert probe_video(slow_out).frame_count == 12
    bad = tmp_path / "bad_preset.mp4"
    assert run(["render", str(short_clip), "-o", str(bad), "--au", "12=+1", "--weights", str(weights),
                "--encoder-preset", "turbo"]) == 1
    err = capsys.readouterr().err
    assert "--encoder-preset 'turbo'" in err and "veryfast" in err and "Traceback" not in err
    assert not bad.exists()


@pytest.mark.slow
def test_full_wolfgang_video(editor: Editor, samples: Path, tmp_path: Path) -> None:
    """The whole 472-frame clip with its audio: same frame count, fps and duration."""
    src = samples / "pyfeat" / "WolfgangLanger_Pexels.mp4"
    out = tmp_path / "wolfgang.mp4"
    stats = render_video(editor, src, out, parse_au_specs(["12=+1"]), batch=16)
    before, after = probe_video(src), probe_video(out)
    assert after.frame_count == before.frame_count == stats.frames
    assert after.fps == pytest.approx(before.fps, rel=1e-3)
    assert after.duration == pytest.approx(before.duration, abs=0.1)
    assert after.has_audio == before.has_audio


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in {f"fgfem-{s}" for s in STAGE_NAMES}]


STAGE_NAMES = ("track", "geometry", "model", "compose")


def test_pipelined_render_gives_the_sequential_frames_and_file(editor: Editor, short_clip: Path,
                                                               tmp_path: Path) -> None:
    """The pipeline changes when the work happens, never what it computes: same frames before the encoder
    (a rig field and a generator change in every one), in order, and the same encoded video."""
    frames = list(iter_frames(short_clip))
    spec = parse_au_specs(["12=+2"])

    def edited(pipeline: bool) -> list[np.ndarray]:
        tracker = FaceTracker(editor.backend, TrackerConfig(fps=probe_video(short_clip).fps))
        return [f.rgb for f in edit_frames(editor, frames, lambda _i: spec, tracker=tracker, batch=5,
                                           pipeline=pipeline)]

    sequential, pipelined = edited(False), edited(True)
    assert len(pipelined) == len(sequential) == 12
    assert all(np.array_equal(a, b) for a, b in zip(sequential, pipelined, strict=True))
    assert all(not np.array_equal(a, f) for a, f in zip(sequential, frames, strict=True))
    # torch's results can move by one grey level with its thread count, so the sequential render runs under
    # the thread limits the pipelined one sets for itself.
    outs = {}
    for pipeline in (False, True):
        outs[pipeline] = tmp_path / f"pipeline_{pipeline}.mp4"
        with contextlib.nullcontext() if pipeline else limited_threads(default_compute_threads()):
            stats = render_video(editor, short_clip, outs[pipeline], spec, batch=5, pipeline=pipeline)
        assert stats.frames == 12 and stats.edited == 12
    assert outs[False].read_bytes() == outs[True].read_bytes()
    assert all(np.array_equal(a, b) for a, b in zip(iter_frames(outs[False]), iter_frames(outs[True]), strict=True))
    assert not _stage_threads()


def _fails_on_second_call(real):
    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return real(*args, **kwargs)

    return run


def test_a_model_stage_failure_ends_the_render_in_one_line_without_a_file(editor: Editor, short_clip: Path,
                                                                          tmp_path: Path, monkeypatch) -> None:
    from fgfem.pipeline import StageError

    monkeypatch.setattr(editor, "appearance", _fails_on_second_call(editor.appearance))
    out = tmp_path / "out.mp4"
    with pytest.raises(StageError) as caught:
        render_video(editor, short_clip, out, parse_au_specs(["12=+1"]), batch=4)
    assert str(caught.value) == ("render stopped in the model stage: RuntimeError: CUDA out of memory. "
                                 "Tried to allocate 2 GiB")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a partial file
    assert not _stage_threads()


def test_an_encoder_failure_ends_the_render_in_one_line_without_a_file(editor: Editor, short_clip: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    """x264 dies after three frames (killed): the render stops with the writer's one line, nothing is left."""
    from fgfem.errors import FgfemError
    from fgfem.video import VideoWriter

    real_write = VideoWriter.write

    def write(self, frame):
        if self.frames_written == 3:
            self._process.kill()
            self._process.wait()
        real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", write)
    out = tmp_path / "out.mp4"
    with pytest.raises(FgfemError) as caught:
        render_video(editor, short_clip, out, parse_au_specs(["12=+1"]), batch=4)
    assert str(caught.value).startswith("cannot write video") and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    assert not _stage_threads()


def test_cli_render_stage_failure_is_one_error_line(short_clip: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from fgfem.nets import Generator, NetConfig
    from fgfem.weights import save_generator

    cfg = NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)
    weights = tmp_path / "tiny.safetensors"
    save_generator(weights, Generator(cfg), cfg)
    monkeypatch.setattr(Editor, "appearance", _fails_on_second_call(Editor.appearance))
    out = tmp_path / "videos" / "out.mp4"
    out.parent.mkdir()
    code = run(["render", str(short_clip), "-o", str(out), "--au", "12=+1", "--weights", str(weights),
                "--device", "cpu", "--backend", "dlib", "--batch", "4"])
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: render stopped in the model stage: RuntimeError: CUDA out of memory. Tried to "
                      "allocate 2 GiB"], err
    assert "Traceback" not in err and list(out.parent.iterdir()) == []


def test_pipelined_edit_keeps_a_bounded_number_of_frames_in_flight(editor: Editor) -> None:
    """Memory stays flat: however long the stream, at most about six batches are between decoder and writer."""
    batch, pulled = 2, 0

    def frames():
        nonlocal pulled
        for _ in range(50):
            pulled += 1
            yield np.zeros((48, 64, 3), np.uint8)

    class NoFaces(FaceTracker):
        """Finds no face at once (dlib takes ~60 ms to be sure): the frames pass through every stage."""

        def update(self, rgb: np.ndarray) -> list:
            return []

    lead = 0
    tracker = NoFaces(editor.backend)
    for done, frame in enumerate(edit_frames(editor, frames(), lambda _i: parse_au_specs(["12=+1"]),
                                             tracker=tracker, batch=batch, pipeline=True), start=1):
        assert frame.faces == 0
        time.sleep(0.02)  # a slow writer: the stages run ahead until their queues are full
        lead = max(lead, pulled - done)
    assert batch < lead <= 6 * batch + 2  # 4 queues of one batch, a batch in the model and in compose, 2 frames
    assert not _stage_threads()
