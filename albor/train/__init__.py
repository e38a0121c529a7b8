"""Training: ``python -m albor.train`` (see ``albor.train.__main__``)."""
