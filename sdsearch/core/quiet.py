"""Silencing what native code prints: converters and runtimes written in C++ print to file descriptors
1 and 2 directly, past Python's ``sys.stdout``, so only redirecting the descriptors keeps them quiet.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["native_output_silenced"]


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Point file descriptors 1 and 2 at the null device while the block runs, then restore them."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
