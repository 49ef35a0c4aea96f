"""Suite-wide settings.

The commands turn on JAX's persistent compilation cache (``jaxadv.cache``). Tests that run a
command in-process would otherwise switch it on for the rest of the suite, and write into the
user's cache folder: the suite runs with it off (``JAXADV_CACHE_DIR=off``, inherited by the
commands the tests start as subprocesses); ``tests/test_cache.py`` sets its own folders.
"""

import os

os.environ.setdefault("JAXADV_CACHE_DIR", "off")
