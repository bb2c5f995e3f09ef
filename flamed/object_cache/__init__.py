"""The object cache (`flamed object-cache`): versioned objects under `<app>/<session>/<id>`,
persisted to local files, shared by clients and instances (docs/object-cache.md).

daemon.py owns the loop and the socket, requests.py answers requests, index.py decides
(versions, deltas, the size cap and LRU eviction), sessions.py asks the session manager about
deleted sessions; the files themselves are flamed/storage/objects.py.
"""

from flamed.object_cache.daemon import ObjectCache, ObjectCacheOptions

__all__ = ["ObjectCache", "ObjectCacheOptions"]
