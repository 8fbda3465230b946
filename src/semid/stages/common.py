"""What every stage script shares: load params once, report user errors without a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from semid.io import SemidError


def stage_main(func: Callable[[], None]) -> Callable[[], None]:
    """Run a stage body; a SemidError (bad params, bad data) prints one clear line and exits 2."""

    @functools.wraps(func)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            func()
        except SemidError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
