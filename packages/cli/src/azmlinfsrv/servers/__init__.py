"""Server front-ends; the launcher imports only the one it uses (see ``azmlinfsrv.launch.SERVERS``)."""

# What the launcher hands, in the environment, to the process it execs into (the gunicorn master, or the waitress
# supervisor): its launch settings as JSON, and a temporary directory to remove when the server ends.
SETTINGS_ENV = "AZMLINFSRV_LAUNCH_SETTINGS"
CLEANUP_ENV = "AZMLINFSRV_LAUNCH_CLEANUP"
