"""The start-up schema check reads revisions without Alembic, and agrees with Alembic (scanner/revisions.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

from scanner import migrate, revisions
from scanner.db import make_engine


def test_each_revision_file_is_named_after_its_revision_and_the_newest_is_alembics_head() -> None:
    folder = resources.files("migrations").joinpath("versions")
    files = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".py"))
    assert files == sorted(revisions.revision_files().values())
    for revision, name in revisions.revision_files().items():
        declared = re.search(r'^revision: str = "(\w+)"', folder.joinpath(name).read_text(), re.MULTILINE)
        assert declared is not None, name
        assert declared.group(1) == revision, name
    assert revisions.newest_revision() == migrate.head_revision()


def test_a_database_is_at_no_revision_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    try:
        assert revisions.database_revision(engine) is None
        migrate.upgrade(url)
        assert revisions.database_revision(engine) == revisions.newest_revision()
    finally:
        engine.dispose()


def test_the_check_loads_no_alembic() -> None:
    probe = "import sys, scanner.revisions, deepscan.cli.context; print('alembic' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
