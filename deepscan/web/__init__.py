"""The web face of deepscan: a JSON API under /api/v1 and a server-rendered review console.

One ASGI application (FastAPI, served by uvicorn through `deepscan serve`) over the same database
and core functions as the CLI: filters and pages come from `scanner.queries`, reviews from
`scanner.review`, scans from `scanner.producer`. It holds no logic of its own beyond parsing,
authorising and rendering.
"""
