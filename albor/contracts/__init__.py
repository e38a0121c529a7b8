"""Contracts: the schema, the loader and the checker (``python -m albor.contracts check``)."""

from albor.contracts.load import load_contracts, obligation, tolerance
from albor.contracts.schema import Contract, Obligation

__all__ = ["Contract", "Obligation", "load_contracts", "obligation", "tolerance"]
