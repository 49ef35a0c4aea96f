"""The persistent compilation cache: folder resolution, flags, and a second process that hits it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from jaxadv import cache

REPO = Path(__file__).resolve().parents[1]

PROGRAM = """
import sys
import jax, jax.numpy as jnp
from jaxadv import cache
print(cache.enable_compilation_cache(sys.argv[1]))
hits = []
jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e))
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 3.0)
print(float(f(jnp.ones((64, 64))).sum()))
print("HIT" if "/jax/compilation_cache/cache_hits" in hits else "MISS")
"""


def test_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)  # conftest.py turns the cache off for the suite
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "jaxadv" / "xla"
    assert cache.cache_dir(tmp_path / "x") == tmp_path / "x"
    assert cache.cache_dir(tmp_path / "x", disable=True) is None
    monkeypatch.setenv(cache.ENV, str(tmp_path / "env"))
    assert cache.cache_dir() == tmp_path / "env"
    assert cache.cache_dir(tmp_path / "flag") == tmp_path / "flag"  # the flag wins
    for off in ("off", "0", ""):
        monkeypatch.setenv(cache.ENV, off)
        assert cache.cache_dir() is None


def test_flags():
    p = argparse.ArgumentParser()
    cache.add_cache_flags(p)
    a = p.parse_args(["--cache-dir", "/tmp/c"])
    assert a.cache_dir == Path("/tmp/c") and not a.no_cache
    assert p.parse_args(["--no-cache"]).no_cache


def test_second_process_compiles_nothing(tmp_path):
    folder = tmp_path / "xla"

    def run():
        res = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(folder)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )  # fmt: skip (the explicit folder overrides the suite's JAXADV_CACHE_DIR=off)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    first = run()
    entries = sorted(p.name for p in folder.iterdir())
    assert first[0] == str(folder) and first[-1] == "MISS" and entries
    second = run()
    assert second[1] == first[1]  # same value
    assert second[-1] == "HIT"  # loaded from the cache, not compiled
    assert sorted(p.name for p in folder.iterdir()) == entries  # nothing new was written


def test_unwritable_folder_disables_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cache.enable_compilation_cache(blocker / "sub") is None
    assert "compilation cache disabled" in caplog.text
    assert cache.enable_compilation_cache(disable=True) is None
