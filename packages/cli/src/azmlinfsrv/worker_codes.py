"""Exit codes of serving processes, shared by the launcher and the workers without importing the server."""

from __future__ import annotations

# A gunicorn worker that cannot boot exits with this code. It is not upstream's 3 on purpose: gunicorn halts the
# whole server when a worker exits with its boot-error code, and user code calling os._exit(3) after start-up must
# not stop the server (docs/guarantees.md#w8). The launcher maps this code back to 3.
BOOT_FAILURE_EXIT_CODE = 87
UPSTREAM_BOOT_FAILURE_EXIT_CODE = 3
