"""QueueWatch: a queued request listens for its client only once its wait is long."""

from __future__ import annotations

import asyncio

from a2wsgi_mp.pool.queue_watch import QueueWatch

from .serverproc import until


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class Client:
    """A receive() that answers http.disconnect once told the client left."""

    def __init__(self) -> None:
        self.calls = 0
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        self.calls += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_a_short_wait_never_listens_and_leaves_no_timer() -> None:
    async def scenario() -> None:
        watch = QueueWatch(0.05)
        client = Client()
        task = asyncio.ensure_future(asyncio.sleep(10))
        entry = watch.add(task, client.receive, asyncio.get_running_loop())
        assert watch._handle is not None
        watch.remove(entry)  # served before the sweep
        await asyncio.sleep(0.12)  # (a negative check: two sweep periods pass)
        assert client.calls == 0 and entry.watcher is None
        assert len(watch) == 0 and watch._handle is None  # the sweep disarmed itself
        task.cancel()

    run(scenario())


def test_a_long_wait_listens_and_a_leaving_client_cancels_its_task() -> None:
    async def scenario() -> None:
        watch = QueueWatch(0.02)
        client = Client()
        task = asyncio.ensure_future(asyncio.sleep(10))
        entry = watch.add(task, client.receive, asyncio.get_running_loop())
        assert await until(lambda: client.calls == 1, 5.0)
        assert not task.done()
        client.gone.set()
        assert await until(task.done, 5.0)
        assert task.cancelled() and entry.left
        watch.remove(entry)
        watch.close()

    run(scenario())


def test_removing_a_watching_entry_cancels_its_listener() -> None:
    async def scenario() -> None:
        watch = QueueWatch(0.02)
        client = Client()
        task = asyncio.ensure_future(asyncio.sleep(10))
        entry = watch.add(task, client.receive, asyncio.get_running_loop())
        assert await until(lambda: entry.watcher is not None, 5.0)
        watcher = entry.watcher
        watch.remove(entry)
        assert await until(lambda: watcher.done(), 5.0)
        assert watcher.cancelled() and not entry.left and not task.done()
        task.cancel()
        watch.close()

    run(scenario())


def test_only_the_requests_queued_long_enough_listen() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        watch = QueueWatch(0.05)
        old_client, new_client = Client(), Client()
        tasks = [asyncio.ensure_future(asyncio.sleep(10)) for _ in range(2)]
        old = watch.add(tasks[0], old_client.receive, loop)
        await asyncio.sleep(0.03)
        new = watch.add(tasks[1], new_client.receive, loop)
        # The first sweep (at ~0.05 s) finds only the first one due.
        assert await until(lambda: old.watcher is not None, 5.0)
        assert new.watcher is None or loop.time() - new.since >= watch.after
        assert await until(lambda: new.watcher is not None, 5.0)
        assert loop.time() - new.since >= watch.after
        for entry in (old, new):
            watch.remove(entry)
        for task in tasks:
            task.cancel()
        watch.close()

    run(scenario())
