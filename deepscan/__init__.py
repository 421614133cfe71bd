"""The front ends of deepscan: the command line (`deepscan.cli`) and the web app (`deepscan.web`).

They sit above `workers` and `training`, which sit above the core in `scanner`; they translate input,
output and errors and hold no rules of their own (the layers are the import-linter contract in
pyproject.toml, checked by `make lint`).
"""
