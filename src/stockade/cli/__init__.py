"""The ``stockade`` command line: a thin layer over the SDK (and the image store)."""
