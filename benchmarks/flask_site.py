"""The Flask app of the real-page scenario R3: a page rendered from Jinja templates.

``/`` renders ``page.html`` (extends ``base.html``: blocks, a loop over 30
rows, autoescaping, ``url_for``, a filter) from ``benchmarks/flask_templates``,
the way a small Flask site serves its pages; ``/hello`` is only for the
benchmark's readiness check.
"""

from __future__ import annotations

import os

from flask import Flask, render_template

app = Flask(__name__, template_folder=os.path.join(os.path.dirname(__file__), "flask_templates"))

ROWS = [{"id": i, "name": f"Item <{i}>", "price": i * 1.25, "tags": ["a", "b", "c"][: i % 3 + 1]}
        for i in range(30)]


@app.route("/")
def page():
    return render_template("page.html", title="Catalogue", rows=ROWS, user={"name": "Ada & co"})


@app.route("/item/<int:item_id>")
def item(item_id: int):
    return {"id": item_id}


@app.route("/hello")
def hello():
    return "Hello, world!", 200, {"Content-Type": "text/plain"}


application = app
