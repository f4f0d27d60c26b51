"""Progress display for long work (files and bytes), on stderr and only for a person at a terminal."""

from __future__ import annotations

import sys
from typing import Callable, Optional


class ByteProgress:
    """A tqdm bar in bytes that also shows the file count; a no-op when output is not a terminal."""

    def __init__(self, total_bytes: int, total_files: int, label: str, enabled: Optional[bool] = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        self._files_total = total_files
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(self, files_done: int, bytes_done: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{files_done}/{self._files_total} files", refresh=False)
            self._bar.update(bytes_done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Callable[[int, int], None]:
        return self.update

    def __exit__(self, *exc) -> None:
        self.close()
