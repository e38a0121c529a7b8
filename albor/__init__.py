"""Albor: a verified trainer for small LLaMA-style Python code models."""

__version__ = "0.1.0"
