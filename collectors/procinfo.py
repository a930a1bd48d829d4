"""Who runs what on a GPU: the user and command line of a GPU process, shown in full or pseudonymised.

User names and command lines are personal data (and command lines sometimes carry tokens), so the agent's
``process_privacy`` decides what leaves the node: ``full`` (``alice: python train.py --lr 3e-4``),
``pseudonymize`` (``user-1f0c…: cmd-9a4e…``: a keyed HMAC-SHA256, so the same user or command maps to the same
token on every node sharing the key and can still be counted, but not read back without the key) or ``off``
(the agent records no per-process rows; the per-GPU process count stays).

The process table is injected (``lookup``): production reads ``/proc`` through psutil; tests pass a dict.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import TypeVar

import psutil

MODES = ("full", "pseudonymize", "off")
NAME_MAX = 255  # the store's column width
TOKEN_HEX = 16  # 64 bits of the HMAC: unique enough to count users and commands, short enough to read

T = TypeVar("T")
Lookup = Callable[[int], tuple[str | None, list[str] | None]]


def psutil_lookup(pid: int) -> tuple[str | None, list[str] | None]:
    """User name and argv of ``pid`` from ``/proc``; ``(None, None)`` when it is gone or not visible (another
    PID namespace, ``hidepid``)."""
    try:
        process = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None, None
    with process.oneshot():
        user: str | None = _safe(process.username)
        argv: list[str] | None = _safe(process.cmdline)
    return user, argv or None


def _safe(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except (psutil.Error, KeyError):  # gone, denied, a zombie; KeyError: a uid with no passwd entry
        return None


class ProcessIdentity:
    """``pid -> name`` for the collector's ``process_name``: the display string under the configured mode."""

    def __init__(self, mode: str, key: bytes | None = None, lookup: Lookup = psutil_lookup) -> None:
        if mode not in MODES:
            raise ValueError(f"process privacy {mode!r} is not one of {', '.join(MODES)}")
        if mode == "pseudonymize" and not key:
            raise ValueError("pseudonymize needs a key")
        self.mode, self._key, self.lookup = mode, key or b"", lookup

    @property
    def records_processes(self) -> bool:
        return self.mode != "off"

    def token(self, kind: str, value: str) -> str:
        """``kind-<hex>``: HMAC-SHA256 of ``kind:value`` under the key (the kind keeps a user named like a
        command from sharing its token)."""
        digest = hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:TOKEN_HEX]}"

    def __call__(self, pid: int) -> str | None:
        if self.mode == "off":
            return None
        user, argv = self.lookup(pid)
        command = " ".join(argv) if argv else None
        if self.mode == "pseudonymize":
            user = self.token("user", user) if user else None
            command = self.token("cmd", command) if command else None
        if user and command:
            return f"{user}: {command}"[:NAME_MAX]
        return (user or command or "")[:NAME_MAX] or None
