"""``python -m convert`` (repository root only): the same as ``python -m jaxadv.convert``."""

import sys

from jaxadv.convert.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m convert"))
