"""``fgfem prep``: training sets built from photos and videos (``dataset``) and AU label files (``labels``).

The faces themselves are found, aligned and cropped by ``fgfem.faces`` and labelled by
``fgfem.au_reading``; this package only turns folders into the layout ``fgfem train`` reads.
"""
