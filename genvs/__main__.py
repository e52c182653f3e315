"""``python -m genvs ...``: the command line, :mod:`genvs.cli` (``python -m genvs --help`` lists the commands)."""

from genvs.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
