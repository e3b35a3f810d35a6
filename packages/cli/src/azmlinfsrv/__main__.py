"""``python -m azmlinfsrv``."""

from __future__ import annotations

from azmlinfsrv.main import main

if __name__ == "__main__":
    main()
