"""`make bench`: the shop under gunicorn on loopback, driven by wrk, each figure beside a baseline.

Not a test. What it does (bench/README.md has the figures and what profiling found):

1. A fresh database built from the migrations: a SQLite file, or a new database on the PostgreSQL
   server named by BENCH_DATABASE_URL (dropped at the end).
2. gunicorn (BENCH_WORKERS gthread workers x BENCH_THREADS threads, --reuse-port, BACKGROUND_WORKER=0)
   serving bench/app.py: the shop, plus a bare Flask endpoint /bench/bare that reads the body and
   answers "[accepted]": the ceiling. Beside it one `flask worker` process at nice WORKER_NICE.
3. Webhook ingestion at 1, 16 and 64 concurrent senders: wrk POSTs pre-signed notifications, each
   unique (one per seeded pending order), to /webhooks/adyen, and the same bodies to /bench/bare.
   Each is verified (basic auth, HMAC), stored, deduplicated and answered; the worker process then
   applies it (pending -> paid, one email). Between levels the bench waits for that backlog.
4. The storefront pages (catalog, cart, result at 16 at once; checkout at CHECKOUT_CONCURRENCY)
   against GET /bench/bare at the same concurrency.
5. Checkout round trips through the simulator: cart -> /payments -> KNET page -> return ->
   /payments/details -> result page, by SHOPPERS at once (a Python driver: it must read forms),
   against the same number of GET /bench/bare per round trip.
6. Counts in the database after the run, expected vs found: every accepted webhook stored once,
   applied once, one transition and one email per order; every checkout paid by one delivery.

Settings (environment): BENCH_DATABASE_URL, BENCH_WORKERS (2), BENCH_THREADS (8),
BENCH_SCALE (1.0: multiplies every request count), BENCH_PARTS, BENCH_IN_PROCESS_WORKER,
BENCH_PROFILE=DIR (py-spy records the workers during the 16-sender webhook run into DIR).
Exit status 1 when a request failed or a count is off; the speed targets are reported, not enforced.
"""

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import create_engine, func, insert, make_url, select, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from shop.adyen.signature import sign  # noqa: E402
from shop.config import SIMULATOR_DEFAULTS  # noqa: E402

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
PROFILE_DIR = os.environ.get("BENCH_PROFILE", "").strip()
# BENCH_PARTS=webhooks: only the webhook figures (the pages and checkout runs take a minute more).
PARTS = os.environ.get("BENCH_PARTS", "webhooks,pages,checkout").split(",")
# BENCH_IN_PROCESS_WORKER=1: the background loop runs in the gunicorn workers (BACKGROUND_WORKER=1,
# the default of `make run`) instead of in a `flask worker` process of its own at nice WORKER_NICE.
IN_PROCESS_WORKER = os.environ.get("BENCH_IN_PROCESS_WORKER", "0") == "1"
WORKER_NICE = 10

LEVELS = [(1, 600), (16, 3000), (64, 3000)]  # (concurrent senders, notifications)
PAGE_CONCURRENCY = 16
PAGE_REQUESTS = 1500
CHECKOUT_PAGE_REQUESTS = 400
# The checkout page, like every step of a purchase, calls the simulator on this same server: it
# holds a thread while the simulator needs another. At most THREADS / 2 at once, so that even when
# all land on one worker, the simulator's calls find a free thread there.
CHECKOUT_CONCURRENCY = max(1, THREADS // 2)
SHOPPERS = CHECKOUT_CONCURRENCY
ROUND_TRIPS = 120
WRK_LIMIT_SECONDS = 120

MERCHANT = SIMULATOR_DEFAULTS["ADYEN_MERCHANT_ACCOUNT"]
HMAC_KEY = SIMULATOR_DEFAULTS["ADYEN_HMAC_KEY"]
WEBHOOK_AUTH = (
    "Basic "
    + base64.b64encode(
        f"{SIMULATOR_DEFAULTS['WEBHOOK_USERNAME']}:{SIMULATOR_DEFAULTS['WEBHOOK_PASSWORD']}".encode()
    ).decode()
)


def scaled(n):
    return max(1, int(n * SCALE))


# The database -------------------------------------------------------------------------------------


class Database:
    """A fresh, migrated database for this run: a SQLite file, or a new PostgreSQL database."""

    def __init__(self, workdir):
        server = os.environ.get("BENCH_DATABASE_URL", "").strip()
        self.admin = None
        if server:
            self.name = f"shop_bench_{os.getpid()}_{secrets.token_hex(2)}"
            self.admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with self.admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = make_url(server).set(database=self.name).render_as_string(hide_password=False)
            self.label = f"PostgreSQL ({make_url(server).host}:{make_url(server).port or 5432})"
        else:
            self.url = "sqlite:///" + os.path.join(workdir, "bench.sqlite3")
            self.label = "SQLite file (WAL)"
        self.app = self._migrate()

    def _migrate(self):
        from shop import create_app
        from shop.db import upgrade_all

        app = create_app(
            {"ENV": {"ADYEN_ENVIRONMENT": "simulator"}, "SQLALCHEMY_DATABASE_URI": self.url, "BACKGROUND_WORKER": False}
        )
        with app.app_context():
            upgrade_all(app)
        return app

    def drop(self):
        from shop.db import db

        with self.app.app_context():
            db.engine.dispose()
        if self.admin is not None:
            with self.admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def seed_orders(app, count):
    """`count` pending orders, as if each shopper had reached KNET's page; their references."""
    from shop.db import db
    from shop.models import Order

    references = [f"BENCH-{n:06d}" for n in range(count)]
    rows = [
        {
            "reference": reference,
            "checkout_key": f"bench-{reference}",
            "status": "pending",
            "amount_value": 12500,
            "currency": "KWD",
            "lines": [{"product_id": "medjool-dates", "name": "Medjool dates", "unit_price": 12500, "quantity": 1}],
            "shopper_first_name": "Fatima",
            "shopper_last_name": "Al-Sabah",
            "shopper_email": "fatima@example.com",
            "shopper_phone": "+96550000000",
        }
        for reference in references
    ]
    with app.app_context():
        for start in range(0, count, 1000):
            db.session.execute(insert(Order), rows[start : start + 1000])
        db.session.commit()
    return references


def webhook_bodies(path, references, first_number):
    """One signed AUTHORISATION per order, one JSON body per line; pspReferences BW…, all different."""
    with open(path, "w") as out:
        for n, reference in enumerate(references, start=first_number):
            item = {
                "additionalData": {"paymentMethodVariant": "knet"},
                "amount": {"currency": "KWD", "value": 12500},
                "eventCode": "AUTHORISATION",
                "eventDate": "2025-01-01T12:00:00+03:00",
                "merchantAccountCode": MERCHANT,
                "merchantReference": reference,
                "paymentMethod": "knet",
                "pspReference": f"BW{n:014d}",
                "reason": "",
                "success": "true",
            }
            item["additionalData"]["hmacSignature"] = sign(item, HMAC_KEY)
            out.write(json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}) + "\n")


# The server -----------------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, database_url, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADYEN_", "SIMULATOR_", "MAIL_"))}
        env.update(
            ADYEN_ENVIRONMENT="simulator",
            DATABASE_URL=database_url,
            PUBLIC_BASE_URL=self.url,
            SECRET_KEY="bench-secret-key",
            SIMULATOR_WEBHOOK_DELAY="0.2",
        )
        # As the README deploys it: the web workers only answer; one `flask worker` process, at a
        # lower CPU priority, applies the webhooks, delivers and sends.
        env["BACKGROUND_WORKER"] = "1" if IN_PROCESS_WORKER else "0"
        self.log_path = os.path.join(workdir, "gunicorn.log")
        self.log = open(self.log_path, "wb")
        self.command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--timeout",
            "30",
            "--backlog",
            "2048",
            "--reuse-port",
            "bench.app:app",
        ]
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.worker = None
        if not IN_PROCESS_WORKER:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--interval", "0.2"],
                cwd=ROOT,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.nice(WORKER_NICE),
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/bench/bare", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start:\n{Path(self.log_path).read_text()[-3000:]}")
            time.sleep(0.1)

    def worker_pids(self):
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def stop(self):
        for process in (self.process, self.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        self.log.close()


# Load -----------------------------------------------------------------------------------------


def wrk(url, method, path, count, connections, bodies="", authorization="", cookie=""):
    """Run wrk for exactly `count` requests; its counts and latencies (ms) and the rate (1/s)."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{WRK_LIMIT_SECONDS}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench" / "wrk.lua"),
        url,
        "--",
        method,
        path,
        str(count),
        bodies,
        authorization,
        cookie,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("BENCH_DONE"):
            process.send_signal(signal.SIGINT)  # all answered: stop sleeping out -d, report now
    process.wait(60)
    line = next((x for x in output if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed:\n{''.join(output)}\n{process.stderr.read()}")
    data = json.loads(line[len("BENCH_JSON ") :])
    seconds = (data["elapsed_us"] or data["duration_us"]) / 1e6
    socket_errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    return {
        "sent": data["sent"],
        "ok": data["answered"] - data["failed"],
        "errors": data["failed"] + socket_errors + (count - data["answered"]),
        "rate": data["answered"] / seconds if seconds else 0.0,
        "p50": data["p50_us"] / 1000,
        "p99": data["p99_us"] / 1000,
        "seconds": seconds,
    }


def wait_until(predicate, timeout, interval=0.2):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def scalar(app, statement):
    from shop.db import db

    with app.app_context():
        try:
            return db.session.execute(statement).scalar()
        finally:
            db.session.rollback()


def webhook_backlog(app):
    from shop.models import Notification

    return scalar(
        app, select(func.count()).select_from(Notification).where(Notification.status.in_(("pending", "processing")))
    )


class Profile:
    """py-spy on every gunicorn worker while a run lasts (BENCH_PROFILE=DIR)."""

    def __init__(self, server, name):
        self.processes = []
        if not PROFILE_DIR:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        os.makedirs(PROFILE_DIR, exist_ok=True)
        for pid in server.worker_pids():
            out = os.path.join(PROFILE_DIR, f"{name}-{pid}.txt")
            self.processes.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--output",
                        out,
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # let py-spy attach

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            process.wait(30)


def bench_webhooks(server, app, references, workdir, results):
    first = 0
    totals = {"sent": 0, "ok": 0, "errors": 0}
    for connections, count in [(c, scaled(n)) for c, n in LEVELS]:
        chunk = references[first : first + count]
        bodies = os.path.join(workdir, f"bodies-{connections}.jsonl")
        webhook_bodies(bodies, chunk, first)
        first += count
        bare = wrk(server.url, "POST", "/bench/bare", count, connections, bodies)
        profile = Profile(server, f"webhooks-c{connections}") if connections == 16 else None
        shop = wrk(server.url, "POST", "/webhooks/adyen", count, connections, bodies, WEBHOOK_AUTH)
        if profile:
            profile.stop()
        drained = wait_until(lambda: webhook_backlog(app) == 0, timeout=300)
        for key in totals:
            totals[key] += shop[key]
        label = f"webhooks, {connections} sender{'s' if connections > 1 else ''}"
        results.append((label + ": accepted/s", shop["rate"], bare["rate"], "higher"))
        results.append((label + ": p50 ms", shop["p50"], bare["p50"], "lower"))
        results.append((label + ": p99 ms", shop["p99"], bare["p99"], "lower"))
        results.append((label + ": errors", shop["errors"], bare["errors"], "zero"))
        results.append(
            (label + ": backlog applied in s", drained if drained is not None else float("nan"), None, "info")
        )
        print(
            f"  {connections:>2} senders: {shop['rate']:7.0f}/s (bare {bare['rate']:7.0f}/s), "
            f"p50 {shop['p50']:.1f} ms, p99 {shop['p99']:.1f} ms, errors {shop['errors']}, "
            f"applied {drained if drained is not None else 'NOT'} s later",
            flush=True,
        )
    return totals


def shopper_cookie(url):
    """A session cookie with one product in the cart (and a checkout form key)."""
    from tests.shopper import Shopper

    shopper = Shopper(url)
    shopper.add_to_cart()
    shopper.checkout_page()
    return "; ".join(f"{name}={value}" for name, value in shopper.http.cookies.get_dict().items())


def bench_pages(server, app, results):
    from shop.db import db
    from shop.models import Order

    with app.app_context():
        token = db.session.execute(select(Order.token).where(Order.status == "paid").limit(1)).scalar()
        db.session.rollback()
    cookie = shopper_cookie(server.url)
    count = scaled(PAGE_REQUESTS)
    pages = [
        ("catalog /", "/", count, "", PAGE_CONCURRENCY),
        ("cart /cart", "/cart", count, cookie, PAGE_CONCURRENCY),
        ("result /orders/<token>", f"/orders/{token}", count, "", PAGE_CONCURRENCY),
        ("checkout /checkout", "/checkout", scaled(CHECKOUT_PAGE_REQUESTS), cookie, CHECKOUT_CONCURRENCY),
    ]
    # The baseline at each concurrency used.
    bare = {c: wrk(server.url, "GET", "/bench/bare", count, c) for c in sorted({page[-1] for page in pages})}
    errors = sum(run["errors"] for run in bare.values())
    for label, path, n, page_cookie, concurrency in pages:
        page = wrk(server.url, "GET", path, n, concurrency, cookie=page_cookie)
        errors += page["errors"]
        baseline = bare[concurrency]
        label = f"page {label}, {concurrency} at once"
        results.append((f"{label}: p50 ms", page["p50"], baseline["p50"], "lower"))
        results.append((f"{label}: p99 ms", page["p99"], baseline["p99"], "lower"))
        results.append((f"{label}: req/s", page["rate"], baseline["rate"], "higher"))
        print(f"  {label}: p50 {page['p50']:.1f} ms, p99 {page['p99']:.1f} ms, {page['rate']:.0f}/s", flush=True)
    results.append(("pages: errors", errors, 0, "zero"))
    return errors


def bench_checkout(server, results):
    """Full purchases by SHOPPERS at once; returns (round trips done, errors)."""
    from tests.shopper import Shopper

    total = scaled(ROUND_TRIPS)
    lock = threading.Lock()
    requests_per_trip = []

    def purchase(_):
        shopper = Shopper(server.url)
        counted = [0]
        shopper.http.hooks["response"].append(lambda response, *a, **k: counted.__setitem__(0, counted[0] + 1))
        started = time.perf_counter()
        shopper.add_to_cart()
        knet_page = shopper.place_order()
        result = shopper.pay_on_knet(knet_page)
        elapsed = time.perf_counter() - started
        ok = result.status_code == 200 and "/orders/" in result.url and "Payment" in result.text
        with lock:
            requests_per_trip.append(counted[0])
        return elapsed, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(SHOPPERS) as pool:
        trips = list(pool.map(purchase, range(total)))
    shop_seconds = time.perf_counter() - started
    per_trip = round(statistics.mean(requests_per_trip))

    session_local = threading.local()

    def bare_trip(_):
        if not hasattr(session_local, "http"):
            session_local.http = requests.Session()
        begun = time.perf_counter()
        for _ in range(per_trip):
            session_local.http.get(server.url + "/bench/bare", timeout=10).raise_for_status()
        return time.perf_counter() - begun

    started = time.perf_counter()
    with ThreadPoolExecutor(SHOPPERS) as pool:
        bare_trips = list(pool.map(bare_trip, range(total)))
    bare_seconds = time.perf_counter() - started

    durations = sorted(t for t, _ in trips)
    errors = sum(1 for _, ok in trips if not ok)
    results.append(("checkout round trips/s", total / shop_seconds, total / bare_seconds, "higher"))
    results.append(
        (
            "checkout round trip p50 ms",
            percentile(durations, 50) * 1000,
            percentile(sorted(bare_trips), 50) * 1000,
            "lower",
        )
    )
    results.append(
        (
            "checkout round trip p99 ms",
            percentile(durations, 99) * 1000,
            percentile(sorted(bare_trips), 99) * 1000,
            "lower",
        )
    )
    results.append(("checkout: errors", errors, 0, "zero"))
    print(
        f"  {total} round trips of {per_trip} requests: {total / shop_seconds:.1f}/s "
        f"(bare {total / bare_seconds:.1f}/s), errors {errors}",
        flush=True,
    )
    return total, errors


def percentile(ordered, p):
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# The counts after the run ---------------------------------------------------------------------


def count_effects(app, webhooks_accepted, webhook_references, round_trips):
    from shop.db import db
    from shop.models import Email, Notification, Order, OrderEvent
    from shop.simulator.models import SimWebhookDelivery

    bench = Notification.merchant_reference.like("BENCH-%")
    used = webhook_references[:webhooks_accepted]
    checkout_orders = Order.checkout_key.not_like("bench-%")

    def n(statement):
        return db.session.execute(statement).scalar()

    with app.app_context():
        used_ids = select(Order.id).where(Order.reference.in_(used)).scalar_subquery()
        checkout_ids = select(Order.id).where(checkout_orders).scalar_subquery()
        rows = [
            ("webhooks stored (one row per notification)", webhooks_accepted, n(select(func.count()).where(bench))),
            (
                "webhooks stored twice (duplicates counted)",
                0,
                n(select(func.coalesce(func.sum(Notification.duplicates), 0)).where(bench)),
            ),
            (
                "webhooks applied once (processed, 1 attempt)",
                webhooks_accepted,
                n(select(func.count()).where(bench, Notification.status == "processed", Notification.attempts == 1)),
            ),
            (
                "their orders paid",
                webhooks_accepted,
                n(select(func.count()).select_from(Order).where(Order.reference.in_(used), Order.status == "paid")),
            ),
            (
                "their transitions pending → paid",
                webhooks_accepted,
                n(
                    select(func.count())
                    .select_from(OrderEvent)
                    .where(OrderEvent.order_id.in_(used_ids), OrderEvent.kind == "transition")
                ),
            ),
            (
                "their emails",
                webhooks_accepted,
                n(select(func.count()).select_from(Email).where(Email.order_id.in_(used_ids))),
            ),
            (
                "seeded orders never sent a webhook, still pending",
                len(webhook_references) - webhooks_accepted,
                n(
                    select(func.count())
                    .select_from(Order)
                    .where(Order.checkout_key.like("bench-%"), Order.status == "pending")
                ),
            ),
            ("checkout orders", round_trips, n(select(func.count()).select_from(Order).where(checkout_orders))),
            (
                "checkout orders paid",
                round_trips,
                n(select(func.count()).select_from(Order).where(checkout_orders, Order.status == "paid")),
            ),
            (
                "checkout transitions (created → pending → paid)",
                2 * round_trips,
                n(
                    select(func.count())
                    .select_from(OrderEvent)
                    .where(OrderEvent.order_id.in_(checkout_ids), OrderEvent.kind == "transition")
                ),
            ),
            (
                "checkout emails",
                round_trips,
                n(select(func.count()).select_from(Email).where(Email.order_id.in_(checkout_ids))),
            ),
            (
                "simulator webhooks delivered once",
                round_trips,
                n(
                    select(func.count())
                    .select_from(SimWebhookDelivery)
                    .where(SimWebhookDelivery.status == "delivered", SimWebhookDelivery.attempts == 1)
                ),
            ),
            ("simulator webhooks in all", round_trips, n(select(func.count()).select_from(SimWebhookDelivery))),
            (
                "checkout webhooks stored and applied once",
                round_trips,
                n(
                    select(func.count()).where(
                        ~bench,
                        Notification.status == "processed",
                        Notification.attempts == 1,
                        Notification.duplicates == 0,
                    )
                ),
            ),
        ]
        db.session.rollback()
    return rows


# The report -----------------------------------------------------------------------------------


def report(results, counts, setup):
    print()
    print(setup)
    print()
    print(f"{'figure':<52} {'value':>10} {'bare':>10} {'ratio':>8}")
    print("-" * 83)
    for figure, value, baseline, better in results:
        if baseline is None:
            print(f"{figure:<52} {fmt(value):>10} {'':>10} {'':>8}")
            continue
        ratio = value / baseline if baseline and better != "zero" else None
        print(f"{figure:<52} {fmt(value):>10} {fmt(baseline):>10} {fmt(ratio) if ratio is not None else '':>8}")
    print()
    print(f"{'database after the run':<52} {'expected':>10} {'found':>10}")
    print("-" * 83)
    wrong = 0
    for check, expected, found in counts:
        mark = "" if expected == found else "  <-- WRONG"
        wrong += expected != found
        print(f"{check:<52} {expected:>10} {found:>10}{mark}")
    return wrong


def fmt(value):
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "n/a"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def targets(results):
    found = {figure: (value, baseline) for figure, value, baseline, _ in results}
    rate, bare_rate = found["webhooks, 16 senders: accepted/s"]
    p99, _ = found["webhooks, 16 senders: p99 ms"]
    errors = sum(value for figure, (value, _) in found.items() if figure.endswith("errors"))
    lines = [
        (
            "webhook ingestion ≥ half the bare endpoint's throughput (16 senders)",
            rate >= 0.5 * bare_rate,
            f"{rate / bare_rate:.2f}",
        ),
        ("webhook p99 < 50 ms at 16 senders", p99 < 50, f"{p99:.1f} ms"),
        ("zero errors", errors == 0, str(errors)),
    ]
    print()
    for text_, met, value in lines:
        print(f"target: {text_:<70} {value:>9}  {'met' if met else 'MISSED'}")


def main():
    if not shutil.which("wrk"):
        raise SystemExit("make bench needs wrk (apt-get install wrk)")
    workdir = tempfile.mkdtemp(prefix="shop-bench-")
    database = Database(workdir)
    server = None
    results = []
    try:
        total_webhooks = sum(scaled(n) for _, n in LEVELS)
        references = seed_orders(database.app, total_webhooks)
        server = Server(database.url, workdir)
        loop = "in the gunicorn workers" if IN_PROCESS_WORKER else f"a flask worker process at nice {WORKER_NICE}"
        setup = (
            f"gunicorn: {WORKERS} gthread workers x {THREADS} threads on 127.0.0.1; {database.label}; "
            f"{os.cpu_count()} cores; load: wrk -t1 (webhooks, pages), {SHOPPERS} Python shoppers (checkout); "
            f"background loop: {loop}; "
            f"load average before: {os.getloadavg()[0]:.1f}"
        )
        print(setup, flush=True)
        # Warm up: each worker imports, connects and renders once.
        for path in ("/", "/cart", "/bench/bare"):
            for _ in range(2 * WORKERS):
                requests.get(server.url + path, timeout=10)
        print("webhook ingestion:", flush=True)
        totals = bench_webhooks(server, database.app, references, workdir, results)
        round_trips = 0
        if "pages" in PARTS:
            print("storefront pages:", flush=True)
            bench_pages(server, database.app, results)
        if "checkout" in PARTS:
            print("checkout round trips:", flush=True)
            round_trips, _ = bench_checkout(server, results)
        settled = wait_until(lambda: checkout_settled(database.app), timeout=120)
        if settled is None:
            print("warning: the background work had not finished after 120 s", flush=True)
        counts = count_effects(database.app, totals["ok"], references, round_trips)
        wrong = report(results, counts, setup + f", after: {os.getloadavg()[0]:.1f}")
        if os.getloadavg()[0] > 1.5:
            print("note: other processes were using the CPU; the figures (not the counts) are less reliable")
        targets(results)
        errors = sum(v for f, v, _, _ in results if f.endswith("errors"))
        print(f"\ngunicorn's log: {server.log_path}")
        return 1 if wrong or errors else 0
    finally:
        if server is not None:
            server.stop()
        database.drop()
        for name in os.listdir(workdir):  # keep gunicorn's log only
            if name != "gunicorn.log":
                os.remove(os.path.join(workdir, name))


def checkout_settled(app):
    """Every checkout order paid, every simulator webhook delivered, no webhook left to apply."""
    from shop.models import Order
    from shop.simulator.models import SimWebhookDelivery

    unpaid = scalar(
        app,
        select(func.count()).select_from(Order).where(Order.checkout_key.not_like("bench-%"), Order.status != "paid"),
    )
    undelivered = scalar(
        app, select(func.count()).select_from(SimWebhookDelivery).where(SimWebhookDelivery.status != "delivered")
    )
    return unpaid == 0 and undelivered == 0 and webhook_backlog(app) == 0


if __name__ == "__main__":
    sys.exit(main())
