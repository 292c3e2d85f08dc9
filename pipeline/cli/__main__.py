"""``python -m pipeline.cli``: the same as the ``riverline`` console script."""

from pipeline.cli import main

main()
