"""The request-body spool: memory below the threshold, a nameless 0600 file above it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat

import pytest

from a2wsgi_mp.pool import spool as spool_mod
from a2wsgi_mp.pool.spool import BodyTooLarge, Spool


def run(coro):
    return asyncio.run(coro)


async def fill(spool: Spool, chunks) -> bytes | None:
    for chunk in chunks:
        await spool.write(chunk)
    return await spool.finish()


def file_bytes(spool: Spool) -> bytes:
    assert spool.file is not None
    fd = spool.file.fileno()
    out = []
    offset = 0
    while True:
        data = os.pread(fd, 1 << 20, offset)
        if not data:
            return b"".join(out)
        out.append(data)
        offset += len(data)


def fd_target(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def test_below_threshold_stays_in_memory() -> None:
    s = Spool(threshold=100)
    body = run(fill(s, [b"abc", b"", b"defg"]))
    assert body == b"abcdefg"
    assert not s.spilled and s.file is None
    assert s.size == 7


def test_exactly_threshold_stays_in_memory() -> None:
    s = Spool(threshold=10)
    assert run(fill(s, [b"01234", b"56789"])) == b"0123456789"
    assert not s.spilled


def test_empty_body() -> None:
    s = Spool(threshold=10)
    assert run(fill(s, [])) == b""
    assert s.size == 0


def test_single_chunk_is_returned_without_copy() -> None:
    chunk = b"x" * 50
    s = Spool(threshold=100)
    assert run(fill(s, [chunk])) is chunk


def test_above_threshold_goes_to_a_file(tmp_path) -> None:
    chunks = [b"a" * 60, b"b" * 60]
    s = Spool(threshold=100, directory=str(tmp_path))
    assert run(fill(s, chunks)) is None
    assert s.spilled
    assert s.size == 120
    assert file_bytes(s) == b"".join(chunks)
    s.close()


def test_many_chunks_across_write_batches_are_intact(tmp_path) -> None:
    chunks = [os.urandom(64 * 1024 + i) for i in range(60)]  # ~3.75 MiB: several WRITE_BATCHes
    assert sum(map(len, chunks)) > 3 * spool_mod.WRITE_BATCH
    s = Spool(threshold=1000, directory=str(tmp_path))
    assert run(fill(s, chunks)) is None
    data = file_bytes(s)
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(chunks)).digest()
    assert s.size == len(data)
    s.close()


def test_spool_file_has_no_name_and_mode_0600(tmp_path) -> None:
    s = Spool(threshold=10, directory=str(tmp_path))
    run(fill(s, [b"z" * 100]))
    fd = s.file.fileno()
    target = fd_target(fd)
    assert target is not None
    # Unlinked ("... (deleted)") or O_TMPFILE, which Linux shows as "<dir>/#<inode> (deleted)".
    assert target.endswith("(deleted)") or "/#" in target, target
    assert os.listdir(tmp_path) == []  # nothing visible in the spool directory
    st = os.fstat(fd)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_nlink == 0
    s.close()


def test_max_size_raises_body_too_large() -> None:
    s = Spool(threshold=10, max_size=100)

    async def go():
        await s.write(b"x" * 60)
        await s.write(b"x" * 40)  # exactly max_size is fine
        with pytest.raises(BodyTooLarge):
            await s.write(b"x")

    run(go())
    s.close()


def test_max_size_first_chunk_too_large() -> None:
    s = Spool(threshold=1000, max_size=10)
    with pytest.raises(BodyTooLarge):
        run(fill(s, [b"x" * 11]))
    s.close()


def test_close_releases_the_descriptor(tmp_path) -> None:
    s = Spool(threshold=10, directory=str(tmp_path))
    run(fill(s, [b"z" * 100]))
    fd = s.file.fileno()
    inode = os.fstat(fd).st_ino
    s.close()
    assert s.file is None
    # The descriptor is closed (or, if its number was reused already, it is another file).
    try:
        assert os.fstat(fd).st_ino != inode
    except OSError:
        pass
    s.close()  # idempotent


def test_close_with_a_write_in_flight_closes_once_the_write_is_done(tmp_path) -> None:
    s = Spool(threshold=10, directory=str(tmp_path))

    async def go():
        await s.write(b"a" * 20)
        await s.write(b"b" * spool_mod.WRITE_BATCH)  # starts a background write
        file = s.file
        inflight = s._inflight
        s.close()
        assert s.file is None
        if inflight is not None:
            await inflight
            await asyncio.sleep(0)
        return file

    file = run(go())
    assert file.closed


def test_close_in_memory_drops_chunks() -> None:
    s = Spool(threshold=100)

    async def go():
        await s.write(b"abc")
        s.close()
        return await s.finish()

    assert run(go()) == b""
