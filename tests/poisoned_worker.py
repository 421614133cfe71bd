"""`deepscan` with a poisonous item: `python -m tests.poisoned_worker worker …` exits at once, as a
segfaulting decoder would, whenever it takes up an item whose URL contains DEEPSCAN_TEST_POISON.

Test-only: the product has no such hook. The chaos test (test_fleet_recovery.py) runs its workers
through this module to have an item that kills its worker every time.
"""

from __future__ import annotations

import os
from typing import Any

import workers.pipeline
from deepscan.cli import main

_analyse_item = workers.pipeline.analyse_item  # type: ignore[attr-defined]  # the name the pipeline calls


def _poisoned(rt: Any, item_id: int, url: str, *args: Any, **kwargs: Any) -> Any:
    poison = os.environ.get("DEEPSCAN_TEST_POISON")
    if poison and poison in url:
        os._exit(139)  # no cleanup, no hand-back: the process is simply gone
    return _analyse_item(rt, item_id, url, *args, **kwargs)


workers.pipeline.analyse_item = _poisoned  # type: ignore[attr-defined]

if __name__ == "__main__":
    main()
