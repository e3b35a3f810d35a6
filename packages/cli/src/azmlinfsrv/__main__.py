"""``python -m azmlinfsrv``."""

from __future__ import annotations

from azmlinfsrv.entry import main

if __name__ == "__main__":
    main()
