"""The spec book: MyST pages generated from contracts, gaps, battery results and runs, built by Sphinx.

``albor book`` refreshes the battery results, writes the generated pages into
``docs/generated/`` and builds the HTML book into ``docs/_build/html`` with warnings as errors.
"""
