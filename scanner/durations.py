"""The one duration grammar every option and schedule uses: `30s`, `15m`, `1.5h`, `7d`, `1w`.

A number (whole or decimal) followed by one unit: s(econds), m(inutes), h(ours), d(ays) or
w(eeks); spaces around and between are ignored. `deepscan results --since 7d`,
`deepscan jobs reconcile --older-than 15m` and `schedule add --cron '@every 1.5h'` all read it here.
"""

from __future__ import annotations

import datetime as dt
import re

from scanner.errors import ConfigError

DURATION_EXAMPLES = "30s, 15m, 1.5h, 7d or 1w"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    """`text` as a timedelta; ConfigError (one line, with examples) when it is not a duration."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ConfigError(f"{text!r} is not a duration like {DURATION_EXAMPLES}")
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def is_duration(text: str) -> bool:
    """True when `text` reads as a duration (so a WHEN option can tell an age from a date)."""
    return _DURATION.match(text.strip().lower()) is not None
