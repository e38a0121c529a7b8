"""The verification layer: contracts, gaps, faults, the battery runner, mutants, the report and the book.

It imports the runtime (``albor`` outside this package); the runtime never imports it.
"""
