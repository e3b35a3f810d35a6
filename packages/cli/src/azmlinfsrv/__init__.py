"""The azmlinfsrv launcher: typer CLI, settings merge, banner, and the gunicorn and waitress front-ends."""
