"""Reports whether the previous request's WSGI environ was freed by reference counting alone (the collector is off).

An environ that only the garbage collector frees keeps the request body (``wsgi.input``) alive until a full
collection: under load with large bodies, tens of MB per worker.
"""

import gc
import weakref

import flask


class _Marker:
    """Lives exactly as long as the environ it is stored in."""


_previous = None


def init():
    gc.disable()


def run(data):
    global _previous
    gc.disable()  # again: the server turns the collector on once it has loaded
    previous_alive = _previous is not None and _previous() is not None
    marker = _Marker()
    flask.request.environ["release_score.marker"] = marker
    _previous = weakref.ref(marker)
    return {"previous_alive": previous_alive}
