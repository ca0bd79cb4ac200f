"""Bench only, never deployed: the shop, with a bare Flask app mounted beside it at /bench.

    gunicorn bench.app:app

/bench/bare reads the request body and answers 200 "[accepted]", and nothing else: the ceiling that
the shop's figures are divided by, served by the same gunicorn, workers and threads. /bench/noop
(204) is what the wrk script sends while it winds down (see bench/wrk.lua).
"""

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from shop import create_app

shop = create_app()
bare = Flask("bench_bare")


@bare.route("/bare", methods=["GET", "POST"])
def bare_endpoint():
    request.get_data()
    return Response("[accepted]", mimetype="text/plain")


@bare.route("/noop")
def noop():
    return Response(status=204)


app = DispatcherMiddleware(shop, {"/bench": bare})
