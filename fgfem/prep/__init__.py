"""Preparing faces: detection and landmarks (``faces``), alignment (``align``), paste-back
(``paste``), landmark smoothing for video (``smoothing``), AU labels and dataset building."""
