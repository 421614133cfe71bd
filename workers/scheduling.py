"""The task beat sends every tick: launch the schedules whose time has come.

The launching itself is the core's (`scanner.launch`); this module gives it the worker's backend.
It is a task module of its own, beside `tasks.py`, because the backend sends `tasks.py`'s tasks:
the beat's task sits above both, so no module imports its way back to itself.
"""

from __future__ import annotations

from scanner.launch import launch_due
from scanner.producer import ScanBackend
from scanner.settings import Settings
from workers.app import LAUNCH_DUE, app
from workers.backend import scan_backend
from workers.tasks import get_runtime


@app.task(name=LAUNCH_DUE, acks_late=True, ignore_result=True)
def launch_due_schedules() -> list[int]:
    """Sent by `deepscan beat` every tick: start the schedules whose time has come."""
    rt = get_runtime()

    def backend_for(settings: Settings) -> ScanBackend:
        return scan_backend(settings, rt.engine)

    return launch_due(rt.settings, rt.engine, backend_for=backend_for)
