"""What every stage script shares: load params once, report user errors without a traceback."""

from __future__ import annotations

import functools
import logging
from typing import Callable

from semid.io import user_errors_exit


def stage_main(func: Callable[[], None]) -> Callable[[], None]:
    """Run a stage body; a SemidError (bad params, bad data) prints one clear line and exits 2."""

    @functools.wraps(func)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        with user_errors_exit():
            func()

    return wrapper
