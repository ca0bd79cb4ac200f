"""A background loop for work that must not hold up a request: processing stored webhooks,
the simulator's webhook deliveries, sending emails.

Each job claims its rows in the database, so several processes (gunicorn workers, hosts)
can run the loop at once without doing the same work twice. Tests and the CLI can call
`run_due_jobs(app)` directly.
"""

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, app, interval):
        self.app = app
        self.interval = interval
        self.jobs = []  # [(name, callable)]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def register(self, name, job):
        self.jobs.append((name, job))

    def wake(self):
        """Run the jobs now rather than at the next tick (called after new work is stored)."""
        self._wake.set()

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shop-worker", daemon=True)
            self._thread.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def run_once(self):
        for name, job in self.jobs:
            with self.app.app_context():
                try:
                    job()
                except Exception:
                    log.exception("background job %s failed; it runs again at the next tick", name)

    def _loop(self):
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.interval)
            self._wake.clear()


def init_app(app):
    worker = Worker(app, interval=app.config.get("WORKER_INTERVAL", 1.0))
    app.extensions["worker"] = worker
    from shop.webhooks import processing

    worker.register("process webhooks", processing.process_due)
    if app.config["ADYEN_ENVIRONMENT"] == "simulator":
        from shop.simulator import sender

        worker.register("simulator webhook deliveries", sender.deliver_due)
    from shop import mail

    worker.register("send emails", mail.send_due)
    if app.config.get("BACKGROUND_WORKER", True) and not _in_cli_command():
        worker.start()


def _in_cli_command():
    """True inside a `flask` command other than `flask run` (e.g. `flask db upgrade`): such a
    command serves no requests, and the loop must not query tables that are being migrated."""
    import click

    context = click.get_current_context(silent=True)
    return context is not None and context.info_name != "run"


def wake(app):
    worker = app.extensions.get("worker")
    if worker:
        worker.wake()
