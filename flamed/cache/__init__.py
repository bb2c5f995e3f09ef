"""flamepy's `flamepy.cache`: the object cache API (implemented in `flamed.client.cache`, which
`flamed.client` re-exports as flamepy's top level and `flamepy.core` do)."""

from flamed.client.cache import ObjectRef, delete_objects, get_object, patch_object, put_object, update_object

__all__ = ["ObjectRef", "delete_objects", "get_object", "patch_object", "put_object", "update_object"]
