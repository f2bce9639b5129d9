"""tvface: 3D face reconstruction from TV video (DECA with temporal encoders), as a package and a book."""
__version__ = "0.1.0"
