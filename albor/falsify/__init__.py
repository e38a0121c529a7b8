"""Fault injection: named switches that re-create registered gaps, and the mutant runner."""
