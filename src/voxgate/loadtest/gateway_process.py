"""The gateway's process as the kernel sees it: resident memory, CPU time and open file descriptors, read
from /proc/PID (Linux), so a load test can chart what each call costs without asking the gateway."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GatewayProcess", "ProcessReading"]


@dataclass(frozen=True)
class ProcessReading:
    rss_mb: float
    cpu_s: float  # user + system time so far, all threads
    fds: int | None  # None when /proc/PID/fd is not ours to read


class GatewayProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc = Path(f"/proc/{pid}")
        if not (self._proc / "stat").exists():
            raise ProcessLookupError(f"no process {pid} on this machine (a load test samples a local gateway only)")
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    def read(self) -> ProcessReading:
        """One reading; ProcessLookupError once the process is gone."""
        try:
            # The command name may hold spaces and parentheses: fields start after its last ")".
            fields = (self._proc / "stat").read_text().rsplit(")", 1)[1].split()
            pages = int((self._proc / "statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError) as exc:
            raise ProcessLookupError(f"process {self.pid} has ended") from exc
        try:
            fds: int | None = len(os.listdir(self._proc / "fd"))
        except PermissionError:
            fds = None
        except FileNotFoundError as exc:
            raise ProcessLookupError(f"process {self.pid} has ended") from exc
        return ProcessReading(rss_mb=pages * self._page_mb, cpu_s=(int(fields[11]) + int(fields[12])) / self._ticks,
                              fds=fds)
