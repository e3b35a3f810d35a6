"""Server front-ends; the launcher imports only the one it uses (see ``azmlinfsrv.launch.SERVERS``)."""
