import json


def init():
    pass


def run(data):
    kind = json.loads(data or "{}").get("kind")
    return {
        "none": None,
        "str": "hello",
        "tuple": (1, "a"),
        "nested": {"a": [1, 2.5, None, True]},
        "unicode": {"text": "héllo ☃"},
    }.get(kind, {"kind": kind})
