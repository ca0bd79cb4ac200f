"""Bench only, never deployed: the shop, with two baselines mounted beside it at /bench.

    gunicorn bench.app:app

- /bench/bare (a bare Flask app) reads the request body and answers 200 "[accepted]", and nothing
  else: the ceiling that the shop's figures are divided by, served by the same gunicorn, workers and
  threads.
- /bench/floor (plain WSGI, no Flask) parses the notification and makes one durable insert of it
  (its pspReference and body, into bench/run.py's `bench_floor` table, committed before the
  answer), nothing else: the least that any receiver that keeps its promise can cost here.
- /bench/noop (204) is what the wrk script sends while it winds down (see bench/wrk.lua).
"""

import json

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from shop import create_app
from shop.db import db

shop = create_app()
bare = Flask("bench_bare")

with shop.app_context():
    ENGINE = db.engine
FLOOR_INSERT = {
    "postgresql": "INSERT INTO bench_floor (psp_reference, body) VALUES (%s, %s)",
    "sqlite": "INSERT INTO bench_floor (psp_reference, body) VALUES (?, ?)",
}[ENGINE.dialect.name]


@bare.route("/bare", methods=["GET", "POST"])
def bare_endpoint():
    request.get_data()
    return Response("[accepted]", mimetype="text/plain")


@bare.route("/noop")
def noop():
    return Response(status=204)


def floor(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    item = json.loads(body)["notificationItems"][0]["NotificationRequestItem"]
    connection = ENGINE.raw_connection()
    try:
        if ENGINE.dialect.name == "postgresql":
            connection.driver_connection.autocommit = True  # the insert and its commit: one round trip
        cursor = connection.cursor()
        cursor.execute(FLOOR_INSERT, (item["pspReference"], body.decode()))
        cursor.close()
        connection.commit()
        if ENGINE.dialect.name == "postgresql":
            connection.driver_connection.autocommit = False
    finally:
        connection.close()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"[accepted]"]


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/bench/floor":
        return floor(environ, start_response)
    return dispatched(environ, start_response)


dispatched = DispatcherMiddleware(shop, {"/bench": bare})
