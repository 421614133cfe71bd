"""The schema revision a database is at, and the newest the migrations know, read without Alembic.

Every command that opens the database first checks that it is at the newest revision. Alembic takes
0.1-0.2 s to import, about as long as the rest of a small `deepscan scan`'s start, so this check
reads the `alembic_version` table and the revision files' names itself, and Alembic is loaded only
by what migrates (scanner/migrate.py). A revision file is named after its revision id
(`0011_item_precision.py` holds revision "0011"; a unit test holds every file to that and checks
the newest against Alembic's own head).
"""

from __future__ import annotations

import re
from importlib import resources

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def revision_files() -> dict[str, str]:
    """Revision id -> file name, for every revision in migrations/versions."""
    folder = resources.files("migrations").joinpath("versions")
    found = (_REVISION_FILE.match(entry.name) for entry in folder.iterdir())
    return {match.group(1): match.group(0) for match in found if match}


def newest_revision() -> str:
    """The newest revision the migrations know (ids are numbered in order)."""
    return max(revision_files())


def database_revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it has never been migrated (or holds no such table)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None
