"""Job logging for workflow scripts: everything (logging, warnings, tqdm, tracebacks) goes to the rule's log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Iterator


def seconds_since_process_start() -> float | None:
    """Wall-clock seconds since this process started (from ``/proc``, 10 ms resolution); None where there is no ``/proc``."""
    try:
        # After "pid (comm)", field 22 of /proc/self/stat (starttime, in clock ticks since boot) is the 20th.
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


@contextlib.contextmanager
def job_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Send logging and stderr of the block to ``log_path``; a failure's traceback is logged, then re-raised.

    The first line logged is the job's start-up (``start-up: 1.23 s``): the time from the process's start (the
    interpreter, Snakemake's script preamble, the script's imports) to entering this block; bench/startup.py
    gathers it per rule.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        start_up = seconds_since_process_start()
        if start_up is not None:
            logging.getLogger("fsad").info("start-up: %.2f s", start_up)
        old_stderr = sys.stderr
        sys.stderr = stream
        try:
            yield logging.getLogger("fsad")
        except BaseException:
            stream.write(traceback.format_exc())
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
