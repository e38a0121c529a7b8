.PHONY: docs

# The spec book: runs the battery, then builds docs/_build/html (use ARGS=--use-existing to skip the battery).
docs:
	albor book $(ARGS)
