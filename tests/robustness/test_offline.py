"""Everything works without a network: sockets are blocked and every attempt to connect is recorded.

The commands run in-process (so the patched ``socket`` module is the one they use), on real
faces, with the default offline face backend. ffmpeg runs as a subprocess on local files only.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
from badinputs import short_clip, small_face_photo, tiny_generator_file
from PIL import Image

from fgfem.cli import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way of reaching the network fail loudly, and keep a list of what was tried."""
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network access blocked by the test ({what})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


@pytest.fixture(scope="module")
def inputs(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offline")
    face = root / "face.jpg"
    small_face_photo(samples).save(face, quality=92)
    target = root / "target.jpg"  # another person with another expression
    Image.open(samples / "pyfeat" / "15-f13-anc-ph.jpg").convert("RGB").resize((256, 256)).save(target)
    raw = root / "raw"
    raw.mkdir()
    shutil.copy(face, raw / "a.jpg")
    shutil.copy(target, raw / "b.jpg")
    return {
        "face": face,
        "target": target,
        "raw": raw,
        "clip": short_clip(samples, root / "clip8.mp4", frames=8, width=320),
        "weights": tiny_generator_file(root / "lite.safetensors"),
    }


def test_every_command_works_offline(inputs: dict[str, Path], no_network: list[str], tmp_path: Path,
                                     capsys) -> None:
    common = ["--weights", str(inputs["weights"]), "--device", "cpu"]
    commands = {
        "edit": ["edit", str(inputs["face"]), "--au", "12=+1", "-o", str(tmp_path / "edit.jpg"), *common],
        "edit --target": ["edit", str(inputs["face"]), "--target", str(inputs["target"]),
                          "-o", str(tmp_path / "transfer.jpg"), *common],
        "aus": ["aus", str(inputs["face"]), "-o", str(tmp_path / "aus.csv")],
        "prep": ["prep", str(inputs["raw"]), str(tmp_path / "data")],
        "interpolate": ["interpolate", str(inputs["face"]), "--au", "12=+2", "--steps", "0,1",
                        "-o", str(tmp_path / "anim.gif"), *common],
        "render": ["render", str(inputs["clip"]), "--au", "12=+1", "-o", str(tmp_path / "out.mp4"), *common],
    }
    for name, argv in commands.items():
        code = run(argv)
        captured = capsys.readouterr()
        assert code == 0, f"{name} failed offline:\n{captured.out}\n{captured.err}"
    assert no_network == [], f"something tried to reach the network: {no_network}"
    for output in ("edit.jpg", "transfer.jpg", "aus.csv", "data/aus.csv", "anim.gif", "out.mp4"):
        assert (tmp_path / output).stat().st_size > 0


def test_fan_without_its_files_fails_fast_naming_them(inputs: dict[str, Path], no_network: list[str],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys) -> None:
    """face-alignment would download its weights on first use; offline that must be one line, at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for argv in (["aus", str(inputs["face"]), "--backend", "fan"],
                 ["edit", str(inputs["face"]), "--au", "12=+1", "--backend", "fan", "-o", str(tmp_path / "o.jpg"),
                  "--weights", str(inputs["weights"]), "--device", "cpu"]):
        started = time.perf_counter()
        code = run(argv)
        seconds = time.perf_counter() - started
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        text = " ".join(err.split())
        assert code == 1, err
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert "s3fd" in text and "2DFAN4" in text, err  # the files it needs
        assert str(tmp_path / "empty-torch-home") in text, err  # and where to put them
        assert seconds < 20, f"took {seconds:.1f} s to fail"
    assert no_network == []
    assert not (tmp_path / "o.jpg").exists()


def test_the_block_catches_what_a_download_would_do(no_network: list[str]) -> None:
    """Control for the tests above: urllib (what torch.hub and face-alignment download with) is caught."""
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen("https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth", timeout=5)
    assert no_network and "www.adrianbulat.com" in no_network[0]
