"""``fgfem serve``: a local, offline web editor with one slider per Action Unit.

``session`` holds the per-photo state and the exact download/command logic (no web
framework), ``views`` the pictures the page shows, ``app`` the Gradio page, ``server``
the offline start-up. Gradio is an optional extra (``pip install "fgfem[app]"``) and is
imported only by ``app`` and ``server``.
"""

from fgfem.serve.session import EditState, PhotoSession, SessionStore, UploadLimits, open_upload

__all__ = ["EditState", "PhotoSession", "SessionStore", "UploadLimits", "open_upload"]
