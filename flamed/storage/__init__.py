"""Durable state of the session manager: write-ahead log, snapshots, recovery.

Only this package writes state files. Entry point: `Storage.open(state_dir, ...)`; see
`storage.py` for when to call what and `errors.py` for the error tree.
"""

from flamed.storage.errors import CorruptLogError, LockedError, StorageError
from flamed.storage.recovery import Recovery
from flamed.storage.storage import FsyncPolicy, Storage

__all__ = ["CorruptLogError", "FsyncPolicy", "LockedError", "Recovery", "Storage", "StorageError"]
