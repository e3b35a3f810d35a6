"""Installs a signal handler at import and in init(), as some libraries do."""

import os
import signal

received = []


def _on_usr1(signum, frame):
    received.append(signum)


signal.signal(signal.SIGUSR1, _on_usr1)


def init():
    signal.signal(signal.SIGUSR2, _on_usr1)


def run(data):
    return {"pid": os.getpid(), "received": received}
