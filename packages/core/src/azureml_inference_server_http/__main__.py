"""``python -m azureml_inference_server_http``: the same as the ``azmlinfsrv`` command."""

from __future__ import annotations

import sys


def _main() -> None:
    try:
        from azmlinfsrv.entry import main
    except ImportError:
        sys.stderr.write(
            "The azmlinfsrv command is not installed. Install it with: pip install azureml-inference-server-http-cli\n"
        )
        raise SystemExit(1) from None
    main()


if __name__ == "__main__":
    _main()
