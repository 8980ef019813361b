"""Reading AU intensities off a face: the landmark estimator and what ``fgfem aus`` measures with it.

``estimator`` maps 68 landmarks to 17 AUs (its constants are ``calibration``, written by
``benchmarks/fit_rig.py --write``); ``measure`` runs it over photos, folders and videos.
It is a package of its own, not part of ``fgfem.faces``, because it is the inverse of the
rig (``fgfem.rig``) and is fitted with it: it needs landmarks, never pixels, and the rig,
the training losses (``fgfem.train.au_geometry``) and the presets depend on it alone.
"""
