"""A background loop for work that must not hold up a request: applying stored webhooks, sending
emails, closing orders no result came for, sending again refunds that got no answer, refunding
flagged payments when AUTO_REFUND_FLAGGED is on, and the jobs plug-ins register (`register`: the
simulator's webhook deliveries).

By default each app process runs the loop in a daemon thread. With BACKGROUND_WORKER=0 the web
processes only answer requests, and `flask --app wsgi worker` runs the loop in a process of its own.
Each job claims its rows in the database (shop/jobs.py), so several processes (gunicorn workers,
`flask worker` processes, hosts) can run the loop at once without doing the same work twice. Tests
and the CLI can call `run_once()` directly.
"""

import logging
import queue
import signal
import threading

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, app, interval):
        self.app = app
        self.interval = interval
        self.jobs = []  # [(name, callable)]
        # Wake-ups go through a SimpleQueue, not a threading.Event: its put() may be called from a
        # signal handler (`flask worker`) without deadlocking the main thread that waits on it.
        self._wakes = queue.SimpleQueue()
        self._running = self._stopping = False
        self._thread = None

    def register(self, name, job):
        self.jobs.append((name, job))

    def wake(self):
        """Run the jobs now rather than at the next tick (called after new work is stored)."""
        if self._running:  # else no loop runs in this process, and nothing would take the wake-up
            self._wakes.put(None)

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="shop-worker", daemon=True)
            self._thread.start()

    def stop(self):
        """Ask the loop to end after its current round (and wait for the thread, if there is one)."""
        self._stopping = True
        self._wakes.put(None)
        if self._thread:
            self._thread.join(timeout=10)

    def run_once(self):
        """Run each job once. Returns whether any of them did something (returned a count above 0)."""
        busy = False
        for name, job in self.jobs:
            with self.app.app_context():
                try:
                    done = job()
                except Exception:
                    log.exception("background job %s failed; it runs again at the next tick", name)
                    continue
            busy = busy or (isinstance(done, int) and done > 0)
        return busy

    def run(self):
        """Run the jobs every `interval` seconds (sooner when woken, and at once again after a round
        that found work: more may have come meanwhile) until stop()."""
        self._running = True
        while not self._stopping:
            if self.run_once():
                continue
            try:
                self._wakes.get(timeout=self.interval)
            except queue.Empty:
                pass
            while not self._wakes.empty():  # the wake-ups of one round call for one more round
                self._wakes.get_nowait()
        self._running = False


def init_app(app):
    """The app's loop with the shop's own jobs; `start` runs it once every plug-in added its jobs."""
    from shop import mail
    from shop.orders import reconcile, refunds
    from shop.webhooks import processing

    worker = Worker(app, interval=app.config["WORKER_INTERVAL"])
    app.extensions["worker"] = worker
    worker.register("process webhooks", processing.process_due)
    worker.register("send emails", mail.send_due)
    worker.register("close orders no result came for", reconcile.reconcile_due)
    worker.register("send again refunds that got no answer", refunds.resend_unanswered)
    worker.register("refund flagged payments (AUTO_REFUND_FLAGGED)", refunds.refund_flagged)
    app.cli.add_command(worker_command)


def register(app, name, job):
    """Add a job (a function run in an app context) to the app's background loop: for plug-ins."""
    app.extensions["worker"].register(name, job)


def start(app):
    """Run the loop in a thread of this process, unless BACKGROUND_WORKER is off or this is a
    `flask` command other than `flask run`."""
    if app.config["BACKGROUND_WORKER"] and not _in_cli_command():
        app.extensions["worker"].start()


@click.command("worker")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between rounds of the jobs (default: WORKER_INTERVAL, 1.0).",
)
@with_appcontext
def worker_command(interval):
    """Run the background jobs in this process until SIGTERM or SIGINT.

    Run it beside web processes started with BACKGROUND_WORKER=0. A signal lets the current
    round finish.
    """
    worker = current_app.extensions["worker"]
    if interval is not None:
        worker.interval = interval
    # The loop runs here, in the main thread, where Python runs signal handlers (init_app starts
    # no thread inside a `flask` command). The handler only asks the loop to stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    names = ", ".join(name for name, _ in worker.jobs)
    log.info("background worker started: %s, every %s s", names, worker.interval)
    worker.run()
    log.info("background worker stopped")


def _in_cli_command():
    """True inside a `flask` command other than `flask run` (e.g. `flask db upgrade`): such a
    command serves no requests, and the loop must not query tables that are being migrated."""
    context = click.get_current_context(silent=True)
    return context is not None and context.info_name != "run"


def wake(app):
    worker = app.extensions.get("worker")
    if worker:
        worker.wake()
