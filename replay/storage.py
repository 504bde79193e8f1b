"""The errors of the storage under an output, shared by every command that writes one."""

from __future__ import annotations

import errno

__all__ = ["STORAGE_ERRNOS"]

#: Errors only a write meets, of the storage under it (a full disk, a quota, a file too
#: large, a file system gone read-only), not of liqmon or its user: one line, exit 1.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
