def init():
    pass

def run(request):
        x = 1
    return x
