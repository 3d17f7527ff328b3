"""Numba kernels, each beside the plain NumPy twin that documents it."""
