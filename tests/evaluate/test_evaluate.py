"""`fgfem eval`: the metrics against known answers, and a full run on real aligned faces.

The data set is built in tmp_path in ``fgfem prep``'s layout from the real vipermu crops
(aligned 128 px frames of one person, with real OpenFace AUs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from fgfem.aus import AU_CODES
from fgfem.errors import FgfemError
from fgfem.evaluate import (
    PSNR_CAP_DB,
    EvalConfig,
    evaluate,
    evaluate_generator,
    psnr,
    select_faces,
    ssim,
    write_report,
)
from fgfem.train.data import load_image

FACES = 6


class Identity(torch.nn.Module):
    """A generator stand-in that returns its input: every metric has a known perfect value."""

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        return x


class Blur(torch.nn.Module):
    """A stand-in that degrades the image but never changes AUs on purpose."""

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset in our layout: aus.csv + manifest.json + crops/ from the vipermu samples."""
    src = samples / "vipermu"
    lines = (src / "attributes.txt").read_text().split("\n")
    rows = [line.split() for line in lines if line.strip()][:FACES]
    root = tmp_path_factory.mktemp("evaldata")
    (root / "crops").mkdir()
    csv = ["path,source,score," + ",".join(AU_CODES)]
    for name, *aus in rows:
        shutil.copy(src / "attribute_images" / name, root / "crops" / name)
        csv.append(f"crops/{name},vipermu/{name},1.0," + ",".join(aus))
    (root / "aus.csv").write_text("\n".join(csv) + "\n")
    (root / "manifest.json").write_text(json.dumps({"size": 128, "template": "fgfem-crop-v1"}))
    return root


@pytest.fixture(scope="module")
def lite_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fgfem.nets import Generator, get_preset
    from fgfem.weights import save_generator

    torch.manual_seed(0)
    # The paper's tanh output: an untrained one reconstructs nothing (lite's residual one is the identity).
    cfg = dataclasses.replace(get_preset("lite"), residual_output=False, au_warp=False)
    generator = Generator(cfg)
    path = tmp_path_factory.mktemp("weights") / "lite.safetensors"
    save_generator(path, generator, cfg, training={"note": "random init, for tests"})
    return path


def _crops(root: Path, count: int = FACES) -> list[torch.Tensor]:
    return [load_image(p, 128) for p in sorted((root / "crops").iterdir())[:count]]


# ---------------------------------------------------------------------------------------------- SSIM and PSNR


def test_ssim_of_constant_images_has_the_closed_form_value() -> None:
    # Constant images: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, -0.3, (0.01 * 2.0) ** 2
    x, y = (torch.full((1, 3, 32, 32), v, dtype=torch.float64) for v in (a, b))
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-9)
    assert ssim(x.float(), y.float()).item() == pytest.approx(expected, rel=1e-4)


def test_ssim_is_one_for_equal_images_and_falls_with_noise(dataset: Path) -> None:
    x = torch.stack(_crops(dataset, 2))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    values = [ssim(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] < 1 and values[-1] < 0.5


def test_ssim_matches_scikit_image(dataset: Path) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    x = _crops(dataset, 1)[0]
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ours = ssim(x[None], y[None]).item()
    # skimage's Gaussian SSIM filters with padding and crops the border, i.e. the same valid region.
    theirs = metrics.structural_similarity(x.numpy(), y.numpy(), channel_axis=0, data_range=2.0,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_psnr_known_values() -> None:
    x = torch.zeros(1, 3, 8, 8)
    # MSE 0.01 on a range of 2 -> 10 log10(4 / 0.01) = 26.02 dB
    assert psnr(x, x + 0.1).item() == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)
    assert psnr(x, x).item() == pytest.approx(PSNR_CAP_DB)


# ---------------------------------------------------------------------------------------------- known generators


def test_identity_generator_scores_perfectly(dataset: Path, tmp_path: Path) -> None:
    crops = _crops(dataset)
    report = evaluate_generator(Identity(), crops, len(crops), config=EvalConfig(identity=False))
    assert report.faces == FACES
    assert report.reconstruction["psnr"] == pytest.approx(PSNR_CAP_DB)
    assert report.reconstruction["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert report.reconstruction["au_drift_mae"] == 0.0
    assert report.reconstruction["identity_distance"] is None and report.summary["identity_distance"] is None
    assert [e.au for e in report.edits] == ["AU04", "AU12", "AU15", "AU26"]
    for edit in report.edits:
        assert edit.measured_change == 0.0 and edit.leakage_mae == 0.0
        assert edit.cycle_psnr == pytest.approx(PSNR_CAP_DB)
        # Nothing moved, so the error is the mean squared request (about 1 unless an AU is near 5).
        assert edit.mse == pytest.approx(edit.requested**2, rel=0.2) and edit.requested > 0.5
        assert edit.identity_distance is None and edit.identity_same_person is None
    assert json.loads(write_report(report, tmp_path / "no_identity.json").read_text())["faces"] == FACES


def test_a_blurring_generator_loses_psnr_but_not_identity(dataset: Path) -> None:
    crops = _crops(dataset, 2)
    report = evaluate_generator(Blur(), crops, 2, config=EvalConfig(aus=("12",), identity=True))
    assert 20 < report.reconstruction["psnr"] < 45
    assert 0.5 < report.reconstruction["ssim"] < 0.99
    (edit,) = report.edits
    assert edit.au == "AU12"
    assert edit.identity_distance is not None and edit.identity_distance < 0.3
    assert edit.identity_same_person == 1.0
    assert "dlib" in report.identity_model


# ---------------------------------------------------------------------------------------------- full runs


def test_evaluate_real_faces_with_a_lite_generator(dataset: Path, lite_weights: Path, tmp_path: Path) -> None:
    # 3 faces in batches of 2: the second batch is a partial one. 3 generator images per face.
    report = evaluate(dataset, lite_weights, limit=3, device="cpu",
                      config=EvalConfig(aus=("AU26",), intensity=1.5, batch=2))
    assert report.faces == 3 and report.image_size == 128 and report.intensity == 1.5
    data = report.to_dict()
    numbers = [data["reconstruction"][k] for k in ("psnr", "ssim", "au_drift_mae", "identity_distance")]
    for edit in data["edits"]:
        numbers += [edit[k] for k in ("requested", "measured_change", "mse", "leakage_mae", "leakage_mse",
                                      "cycle_psnr", "identity_distance", "identity_same_person")]
        assert len(edit["leakage_by_au"]) == len(AU_CODES) - 1
        numbers += list(edit["leakage_by_au"].values())
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), numbers
    # A random network outputs no face: reconstruction is poor and the descriptor moves away.
    assert data["reconstruction"]["psnr"] < 20
    assert data["weights"]["preset"] == "lite" and data["weights"]["name"] == "lite.safetensors"
    assert data["weights"]["training"] == {"note": "random init, for tests"}
    assert len(data["face_keys"]) == 3

    out = write_report(report, tmp_path / "m.json")
    assert json.loads(out.read_text())["faces"] == 3
    with pytest.raises(FgfemError, match="--force"):
        write_report(report, out)
    write_report(report, out, force=True)


def test_only_selects_by_path_or_source(dataset: Path, tmp_path: Path) -> None:
    keys = [r.key for r in select_faces(dataset).records]
    listing = tmp_path / "only.txt"
    listing.write_text(f"# held out\n{keys[1]}\n\nvipermu/{Path(keys[3]).name}\nnot/there.jpg\n")
    held = select_faces(dataset, only=listing)
    assert [r.key for r in held.records] == [keys[1], keys[3]]
    assert held.unmatched == ("not/there.jpg",)
    listing.write_text("nothing.jpg\n")
    with pytest.raises(FgfemError, match="none of its 1 entries"):
        select_faces(dataset, only=listing)
    with pytest.raises(FgfemError, match="no such file"):
        select_faces(dataset, only=tmp_path / "missing.txt")


def test_bad_options_are_one_line_errors(dataset: Path) -> None:
    crops = _crops(dataset, 1)
    with pytest.raises(FgfemError, match="unknown action unit"):
        evaluate_generator(Identity(), crops, 1, config=EvalConfig(aus=("AU99",)))
    with pytest.raises(FgfemError, match="twice"):
        evaluate_generator(Identity(), crops, 1, config=EvalConfig(aus=("12", "AU12")))
    with pytest.raises(FgfemError, match="intensity"):
        evaluate_generator(Identity(), crops, 1, config=EvalConfig(intensity=0.0))
    with pytest.raises(FgfemError, match="does not exist"):
        evaluate(dataset, dataset / "none.safetensors")


def test_cli_writes_json_and_refuses_to_overwrite(dataset: Path, lite_weights: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from fgfem.cli import run

    out = tmp_path / "metrics.json"
    args = ["eval", str(dataset), "-w", str(lite_weights), "--limit", "1", "--aus", "lip_corner_puller",
            "--no-identity", "--device", "cpu", "-o", str(out)]
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "AU12" in printed and "zero edit" in printed and "on 1 face," in printed
    metrics = json.loads(out.read_text())
    assert metrics["faces"] == 1 and metrics["edits"][0]["au"] == "AU12"
    assert metrics["weights"]["preset"] == "lite" and metrics["data"]["layout"] == "fgfem"
    assert run(args) == 1
    assert "--force" in capsys.readouterr().err
    assert run([*args[:-2], "--aus", "12,99"]) == 1
    assert "unknown action unit '99'" in capsys.readouterr().err


def test_photo_eval_refuses_a_pairs_list_naming_a_missing_photo_before_loading(tmp_path: Path, capsys) -> None:
    """The list is read first: a wrong path is one line naming the line, not a failure after every edit
    (the weights named here do not exist, so getting as far as loading them would be another error)."""
    from fgfem.cli import run

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "hopper.jpg", photos / "hopper.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# neutral posed\nphotos/hopper.jpg photos/smile.jpg\n", encoding="utf-8")
    code = run(["eval", str(photos), "--photos", "--pairs", str(pairs), "--weights", str(tmp_path / "absent.st")])
    err = capsys.readouterr().err
    assert code == 1
    assert "pairs.txt:2: no photo 'photos/smile.jpg'" in err and "relative to the list's folder" in err
    assert "Traceback" not in err and "absent.st" not in err


def test_photo_eval_measures_real_photos_with_averaged_landmarks_and_the_floor(shared: Path, tmp_path: Path,
                                                                              capsys) -> None:
    """`eval --photos` on two held-out neutral photos: the smile shows in dlib's landmarks, the locality's
    floor is printed and written, and the reading says how many sub-pixel shifts it averaged."""
    from fgfem.cli import run
    from fgfem.paths import find_default_weights

    weights = find_default_weights()
    if weights is None:
        pytest.skip("weights/default.safetensors is absent in this checkout")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0101a02.jpg", "1601a01.jpg"):
        shutil.copy(shared / "data" / "taiwanese" / name, photos / name)
    out = tmp_path / "photo-metrics.json"
    code = run(["eval", str(photos), "--photos", "--aus", "12", "--landmark-jitter", "3", "--no-identity",
                "-o", str(out), "--weights", str(weights)])
    printed = capsys.readouterr().out
    words = " ".join(printed.split())  # the title wraps at the table's width
    assert code == 0
    assert "averaged over 3 sub-pixel shifts" in words and "locality floor" in words
    assert "…" not in printed  # the table fits a pipe's 80 columns: no number cut short
    report = json.loads(out.read_text())
    assert report["landmark_jitter"] == 3
    assert 0.0 < report["locality_floor"] < 0.01
    assert report["summary"]["AU12@+1"]["lip_corner_rise"] > 0.03


@pytest.mark.parametrize("value", ["0", "65", "-3"])
def test_photo_eval_refuses_a_landmark_jitter_out_of_range_in_one_line(value: str, tmp_path: Path, capsys) -> None:
    from fgfem.cli import run

    code = run(["eval", str(tmp_path), "--photos", "--landmark-jitter", value])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [f"error: --landmark-jitter {value}: from 1 (one dlib reading) to 64 "
                                        "sub-pixel shifts"]
