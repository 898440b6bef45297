"""A Flask app for the compatibility matrix: session cookie, upload checksum, stream, error."""

import hashlib

from flask import Flask, Response, jsonify, request, session, stream_with_context

app = Flask(__name__)
app.secret_key = "compat-matrix-not-secret"


@app.get("/counter")
def counter():
    session["count"] = session.get("count", 0) + 1
    return jsonify(count=session["count"])


@app.post("/upload")
def upload():
    f = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while chunk := f.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(name=f.filename, size=size, sha256=digest.hexdigest(), field=request.form.get("name", ""))


@app.get("/stream")
def stream():
    @stream_with_context
    def chunks():
        for i in range(100):
            yield f"line {i} {request.path}\n"

    return Response(chunks(), mimetype="text/plain")


@app.get("/raise")
def boom():
    raise RuntimeError("compat-matrix: flask view failed")
