"""fgfem: fine-grained facial expression manipulation with relative Action Units."""

__version__ = "0.1.0"
