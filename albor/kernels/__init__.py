"""Triton kernels with the same names and signatures as the reference ops in ``albor.ops``."""
