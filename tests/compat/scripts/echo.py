def init():
    print("echo init")


def run(data):
    return data
