"""`python -m scanner` runs the deepscan CLI (used where the console script is not on PATH)."""

from scanner.cli import main

main()
