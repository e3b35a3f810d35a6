def run(data):
    return data
