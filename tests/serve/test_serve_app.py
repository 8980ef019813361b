"""`fgfem serve` in-process: loopback only, offline, one render at a time, latest wins, no client paths."""

from __future__ import annotations

import os
import re
import socket

import pytest

from fgfem.cli import run
from fgfem.paths import SOURCE_ROOT
from fgfem.serve.server import OFFLINE_ENV, example_photos, is_loopback

gradio = pytest.importorskip("gradio", reason='fgfem serve needs gradio: pip install ".[app]"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def served():
    """The app around a tiny random generator, started the way ``fgfem serve`` starts it, with every
    connection to anything but this machine refused and recorded."""
    import httpx
    import torch

    from fgfem.editor import Editor
    from fgfem.nets import Generator, NetConfig
    from fgfem.serve.server import start

    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(str(address))
            raise OSError(f"network access blocked by the test ({address})")
        return real_connect(sock, address)

    monkey = pytest.MonkeyPatch()
    monkey.setattr(socket.socket, "connect", connect)
    saved_env = dict(os.environ)  # start() sets gradio's switches for this process; give them back after
    torch.manual_seed(0)
    editor = Editor(Generator(NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)), image_size=128,
                    device="cpu", backend="dlib")
    running = start(editor, port=free_port())
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            yield running, client, attempts
    finally:
        running.close()
        monkey.undo()
        os.environ.clear()
        os.environ.update(saved_env)


def test_listens_on_loopback_with_the_upload_cap(served) -> None:
    running, client, _ = served
    assert running.app.server_name == "127.0.0.1" and running.url.startswith("http://127.0.0.1:")
    assert running.app.max_file_size == 20 * 2**20
    assert client.get("/").status_code == 200


def test_page_loads_nothing_from_outside_and_phones_nothing_home(served) -> None:
    _, client, attempts = served
    html = client.get("/").text
    assert not re.findall(r'(?:src|href)="(?:https?:)?//[^"]+"', html)
    assert attempts == []
    assert all(os.environ[key] == value for key, value in OFFLINE_ENV.items())


def test_renders_one_at_a_time_and_the_latest_slider_position_wins(served) -> None:
    running, _, _ = served
    functions = {f.name: f for f in running.app.fns.values()}
    change = functions["on_change"]
    assert change.trigger_mode == "always_last" and len(change.targets) == 18  # 17 AUs + intensity
    assert functions["on_face"].trigger_mode == "always_last"
    for function in functions.values():
        assert function.concurrency_limit == 1 and function.concurrency_id == "fgfem-model", function.name


@pytest.mark.parametrize("path", ["/etc/passwd", str(SOURCE_ROOT / "README.md"), str(SOURCE_ROOT / "examples")])
def test_no_server_file_is_served_from_a_client_path(served, path: str) -> None:
    _, client, _ = served
    assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)


def test_examples_are_offered_by_name_only() -> None:
    found = example_photos()
    assert "astronaut.png" in found and all(path.parent.name == "examples" for path in found.values())


def test_cli_help_has_examples_and_bad_options_are_one_line(capsys) -> None:
    assert run(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Examples" in text and "fgfem serve --port 8080" in text and "127.0.0.1" in text
    assert run(["serve", "--port", "0"]) == 1
    assert run(["serve", "--max-upload-mb", "-1"]) == 1
    assert "--port 0" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")

