"""`python -m sweep`: the same as the `sweep` command."""

from .entry import main

main()
