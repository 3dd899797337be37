"""The C library, for the system calls Python does not wrap (mount, umount2, syncfs, prctl...)."""

from __future__ import annotations

import ctypes

libc = ctypes.CDLL(None, use_errno=True)
