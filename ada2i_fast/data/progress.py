"""A live line for a builder's step whose progress cannot be counted (a scikit-learn fit): its elapsed time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from tqdm import tqdm

REFRESH_SECONDS = 1.0


@contextlib.contextmanager
def stage(description: str) -> Iterator[None]:
    """``description: 00:12`` on stderr, its clock refreshed every second until the block ends."""
    bar = tqdm(total=1, desc=description, bar_format="{desc}: {elapsed}")
    done = threading.Event()

    def tick() -> None:
        while not done.wait(REFRESH_SECONDS):
            bar.refresh()

    clock = threading.Thread(target=tick, daemon=True)
    clock.start()
    try:
        yield
    finally:
        done.set()
        clock.join()
        bar.update(1)
        bar.close()
