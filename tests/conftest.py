"""Fixtures the unit tests share with the battery."""

from falsification.conftest import small_data  # noqa: F401  (a prepared data folder of a small corpus)
