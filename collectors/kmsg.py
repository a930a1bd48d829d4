"""Reading ``NVRM: Xid`` lines from the kernel log, because NVML's event set misses some XIDs.

``/dev/kmsg`` is a character device that returns one record per read and needs CAP_SYSLOG; a plain
file (a saved dmesg, a test fixture) is tailed like ``tail -f``. Reading starts at the end, so an
agent restart does not replay old XIDs.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from collectors.xid import KernelXid, parse_kernel_line

log = logging.getLogger(__name__)


class KernelLog:
    def __init__(self, path: str = "/dev/kmsg", *, from_start: bool = False) -> None:
        self.path = path
        self.from_start = from_start
        self._fd: int | None = None
        self._device = False
        self._offset = 0
        self._partial = b""
        self._failed = False

    def check(self) -> bool:
        return self._open()

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        if self._failed:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self._failed = True
            log.info("kernel log %s not readable (%s): XIDs come from NVML only", self.path, exc.strerror)
            return False
        self._fd = fd
        self._device = stat.S_ISCHR(os.fstat(fd).st_mode)
        if not self.from_start:
            self._offset = os.lseek(fd, 0, os.SEEK_END)
        return True

    def read_lines(self) -> list[str]:
        if not self._open():
            return []
        assert self._fd is not None
        chunks: list[bytes] = []
        while True:
            try:
                if self._device:
                    chunk = os.read(self._fd, 8192)  # one record per read
                else:
                    chunk = os.pread(self._fd, 65536, self._offset)
                    self._offset += len(chunk)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them: carry on
                    continue
                log.warning("reading %s failed: %s", self.path, exc.strerror)
                break
            if not chunk:
                break
            chunks.append(chunk if not self._device or chunk.endswith(b"\n") else chunk + b"\n")
        data = self._partial + b"".join(chunks)
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next read
        return [line.decode("utf-8", "replace") for line in lines if line]

    def read_xids(self) -> list[KernelXid]:
        return [x for x in map(parse_kernel_line, self.read_lines()) if x is not None]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
