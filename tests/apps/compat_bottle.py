"""A Bottle app for the compatibility matrix: cookie, upload checksum, stream, error."""

import hashlib

import bottle

app = bottle.Bottle()


@app.get("/cookie")
def cookie():
    seen = bottle.request.get_cookie("visits", "0")
    bottle.response.set_cookie("visits", str(int(seen) + 1), path="/")
    return {"seen": int(seen)}


@app.post("/upload")
def upload():
    f = bottle.request.files.get("file")
    data = f.file.read()
    return {"name": f.raw_filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/stream")
def stream():
    bottle.response.content_type = "text/plain"
    return (f"line {i}\n" for i in range(100))


@app.get("/raise")
def boom():
    raise RuntimeError("compat-matrix: bottle view failed")
