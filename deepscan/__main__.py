"""`python -m deepscan` runs the deepscan CLI (used where the console script is not on PATH)."""

from deepscan.cli import main

main()
