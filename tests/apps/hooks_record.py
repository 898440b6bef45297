"""A hooks module that records every call (hook, process, worker pid) to $HOOKS_LOG."""

import os


def _record(name, worker=None):
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(f"{name} {os.getpid()} {getattr(worker, 'pid', '-')} {getattr(worker, 'id', '-')}\n")


def post_fork(server, worker):
    _record("post_fork", worker)


def post_worker_init(worker):
    _record("post_worker_init", worker)


def worker_exit(server, worker):
    _record("worker_exit", worker)


def child_exit(server, worker):
    _record("child_exit", worker)


def when_ready(server):
    _record("when_ready")


def on_reload(server):
    _record("on_reload")
