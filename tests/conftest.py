"""Suite-wide settings.

The commands turn on JAX's persistent compilation cache (``jaxadv.cache``). Tests that run a
command in-process would otherwise switch it on for the rest of the suite, and write into the
user's cache folder: the suite runs with it off (``JAXADV_CACHE_DIR=off``, inherited by the
commands the tests start as subprocesses); ``tests/test_cache.py`` sets its own folders.
"""

import os

os.environ.setdefault("JAXADV_CACHE_DIR", "off")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def untargeted_run(tmp_path_factory):
    """One small untargeted run (VGG13 and dense-wav, 3 clips, test budgets, with audio), made
    once for the tests that only read a run folder (copy it to change it)."""
    from types import SimpleNamespace

    from jaxadv.experiments import untargeted
    from tests.test_experiments import run_cmd, small_data

    tmp = tmp_path_factory.mktemp("untargeted")
    out = tmp / "u"
    out.mkdir()  # an empty folder is a new run folder
    data = small_data(tmp / "data", ("Cello", "Bark", "Gong"))
    run = run_cmd(untargeted, out, "--data", data, "--models", "vgg13,dense_wav")
    return SimpleNamespace(out=out, data=data, run=run, models=["vgg13", "dense_wav"])


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module. The suite compiles thousands of
    programs in one process; kept alive, their code mappings grow towards the kernel's
    ``vm.max_map_count`` (65530), and a full run died with a segfault inside XLA's compiler in
    ``tests/test_checkpoint.py`` (each module alone passed). A module only ever reuses its own
    programs, so nothing is recompiled that a test counts on."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
