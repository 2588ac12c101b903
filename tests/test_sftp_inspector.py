"""SFTP inspector: hand-built SFTP v3 sessions fed whole, byte by byte and split at
random, malformed streams, and a real session captured through an asyncssh bridge."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh import sftp
from bastion.ssh.sftp import FileOperation, SftpInspector, Transfer

# Wire encoding (draft-ietf-secsh-filexfer-02): uint32 length, byte type, payload.


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def s(b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return u32(len(b)) + b


def pkt(ptype: int, *fields: bytes) -> bytes:
    body = bytes([ptype]) + b"".join(fields)
    return u32(len(body)) + body


NOATTRS = u32(0)
INIT = pkt(1, u32(3))
VERSION = pkt(2, u32(3), s("posix-rename@openssh.com"), s("1"))


def status(rid: int, code: int = 0) -> bytes:
    return pkt(sftp.STATUS, u32(rid), u32(code), s("msg"), s(""))


def open_(rid: int, path: bytes | str, pflags: int) -> bytes:
    return pkt(sftp.OPEN, u32(rid), s(path), u32(pflags), NOATTRS)


def handle(rid: int, h: bytes) -> bytes:
    return pkt(sftp.HANDLE, u32(rid), s(h))


def write(rid: int, h: bytes, offset: int, data: bytes) -> bytes:
    return pkt(sftp.WRITE, u32(rid), s(h), u64(offset), s(data))


def read(rid: int, h: bytes, offset: int, length: int) -> bytes:
    return pkt(sftp.READ, u32(rid), s(h), u64(offset), u32(length))


def data(rid: int, payload: bytes) -> bytes:
    return pkt(sftp.DATA, u32(rid), s(payload))


def close(rid: int, h: bytes) -> bytes:
    return pkt(sftp.CLOSE, u32(rid), s(h))


W, R, C, T = sftp.FXF_WRITE, 0x01, sftp.FXF_CREAT, sftp.FXF_TRUNC
H1, H2, H3, H4 = b"\0\0\0\0", b"\0\0\0\1", b"\0\0\0\2", b"\0\0\0\3"

# A session as steps in the order they cross the wire: (direction, bytes). Several
# packets of one direction in a row share a step, so a chunk holds many packets.
SESSION: list[tuple[str, bytes]] = [
    ("c", INIT),
    ("s", VERSION),
    # upload
    ("c", open_(1, "/up/file.bin", W | C | T)),
    ("s", handle(1, H1)),
    ("c", write(2, H1, 0, b"x" * 10) + write(3, H1, 10, b"y" * 32768) + write(4, H1, 32778, b"z" * 5) + close(5, H1)),
    ("s", status(2) + status(3) + status(4) + status(5)),
    # download, with a pipelined READ past the end
    ("c", open_(6, "/down/data.txt", R)),
    ("s", handle(6, H2)),
    ("c", read(7, H2, 0, 32768) + read(8, H2, 32768, 32768) + read(9, H2, 65536, 32768)),
    ("s", data(7, b"d" * 32768) + data(8, b"e" * 1000) + status(9, 1)),
    ("c", close(10, H2)),
    ("s", status(10)),
    # directory listing and stat: no events
    ("c", pkt(11, u32(11), s("/down")) + pkt(17, u32(12), s("/down"))),
    ("s", handle(11, H3) + pkt(104, u32(12), u32(0))),
    ("c", pkt(12, u32(13), s(H3)) + close(14, H3)),
    ("s", pkt(104, u32(13), u32(1), s("a"), s("-rw a"), NOATTRS) + status(14)),
    # changes
    (
        "c",
        pkt(sftp.RENAME, u32(15), s("/a"), s("/b"))
        + pkt(sftp.EXTENDED, u32(16), s("posix-rename@openssh.com"), s("/b"), s("/c"))
        + pkt(sftp.REMOVE, u32(17), s("/c"))
        + pkt(sftp.MKDIR, u32(18), s("/d"), NOATTRS)
        + pkt(sftp.RMDIR, u32(19), s("/d"))
        + pkt(sftp.SETSTAT, u32(20), s("/e"), u32(4), u32(0o600))
        + pkt(sftp.SYMLINK, u32(21), s("/target"), s("/link"))
        + pkt(sftp.EXTENDED, u32(22), s("hardlink@openssh.com"), s("/old"), s("/new"))
        + pkt(sftp.EXTENDED, u32(23), s("statvfs@openssh.com"), s("/")),
    ),
    ("s", b"".join(status(i) for i in range(15, 23)) + pkt(201, u32(23), u64(0) * 11)),
    # touch: opened for writing, nothing written; a read-only open with no read: nothing
    ("c", open_(24, "/touched", W | C) + open_(25, "/peeked", R)),
    ("s", handle(24, H1) + handle(25, H4)),
    ("c", close(26, H1) + close(27, H4)),
    ("s", status(26) + status(27)),
    # read-write, whose close fails; then an open that fails
    ("c", open_(28, "/rw", R | W)),
    ("s", handle(28, H1)),
    ("c", write(29, H1, 0, b"abc") + read(30, H1, 0, 3)),
    ("s", status(29) + data(30, b"abc")),
    ("c", close(31, H1) + open_(32, "/nope", R)),
    ("s", status(31, 4) + status(32, 2)),
    # control characters, bidi override and invalid UTF-8 in a path; left open
    ("c", open_(33, b"/evil\x1b[31m\xe2\x80\xae\xff\n.txt", W | C | T)),
    ("s", handle(33, H2)),
    ("c", write(34, H2, 0, b"q" * 7)),
    ("s", status(34)),
]

EXPECTED: list[Transfer | FileOperation] = [
    Transfer("/up/file.bin", "write", 0, 32783, "ok"),
    Transfer("/down/data.txt", "read", 33768, 0, "ok"),
    FileOperation("rename", "/a", "/b"),
    FileOperation("rename", "/b", "/c"),
    FileOperation("remove", "/c"),
    FileOperation("mkdir", "/d"),
    FileOperation("rmdir", "/d"),
    FileOperation("setstat", "/e"),
    FileOperation("symlink", "/link", "/target"),
    FileOperation("hardlink", "/new", "/old"),
    Transfer("/touched", "write", 0, 0, "ok"),
    Transfer("/rw", "read-write", 3, 3, "failure"),
]
UNCLOSED = [Transfer("/evil[31m\ufffd.txt", "write", 0, 7, "unclosed")]


def feed(insp: SftpInspector, steps, split=lambda b: [b]) -> list:
    """Feed the steps, each cut into chunks by `split`; return the events."""
    events: list = []
    for direction, raw in steps:
        to = insp.client_data if direction == "c" else insp.server_data
        for chunk in split(raw):
            events += to(chunk)
    return events


def run(steps, split=lambda b: [b], inspector=None):
    """Feed the steps to a fresh inspector; return its events and what close() gives."""
    insp = inspector or SftpInspector()
    events = feed(insp, steps, split)
    assert not insp.broken, insp.reason
    return events, insp.close()


def test_one_chunk_per_step():
    assert run(SESSION) == (EXPECTED, UNCLOSED)


def test_one_byte_at_a_time():
    def bytewise(b: bytes) -> list[bytes]:
        return [b[i : i + 1] for i in range(len(b))]

    assert run(SESSION, bytewise) == (EXPECTED, UNCLOSED)


def test_memoryview_and_bytearray_chunks():
    assert run(SESSION, lambda b: [memoryview(b), bytearray()]) == (EXPECTED, UNCLOSED)
    assert run(SESSION, lambda b: [bytearray(b)]) == (EXPECTED, UNCLOSED)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_splits(draw):
    def split(b: bytes) -> list[bytes]:
        cuts = sorted(draw.draw(st.lists(st.integers(0, len(b)), max_size=6)))
        edges = [0, *cuts, len(b)]
        return [b[i:j] for i, j in itertools.pairwise(edges)]

    assert run(SESSION, split) == (EXPECTED, UNCLOSED)


def test_symlink_in_standard_order():
    steps = [("c", pkt(sftp.SYMLINK, u32(1), s("/link"), s("/target")))]
    got, _ = run(steps, inspector=SftpInspector(openssh_symlink=False))
    assert got == [FileOperation("symlink", "/link", "/target")]


def test_write_head_only_is_buffered():
    insp = SftpInspector()
    feed(insp, [("c", open_(1, "/big", W)), ("s", handle(1, H1))])
    big = write(2, H1, 0, b"p" * 200_000)
    for i in range(0, len(big), 997):
        assert insp.client_data(big[i : i + 997]) == []
        assert insp.held <= sftp.WRITE_HEAD
    assert insp.server_data(status(2)) == []
    assert insp.close() == [Transfer("/big", "write", 0, 200_000, "unclosed")]


def test_larger_packets_need_a_larger_limit():
    steps = [("c", open_(1, "/big", W)), ("s", handle(1, H1)), ("c", write(2, H1, 0, b"p" * 1_000_000))]
    insp = SftpInspector()
    feed(insp, steps)
    assert insp.broken and "out of range" in insp.reason
    _, left = run(steps, inspector=SftpInspector(max_packet=4 * 1024 * 1024 + 1024))
    assert left == [Transfer("/big", "write", 0, 1_000_000, "unclosed")]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff" * 64, "out of range"),  # garbage: absurd length
        (u32(2**31) + b"\x03", "out of range"),
        (u32(0) + b"\x03", "out of range"),  # no room for a type
        (pkt(sftp.OPEN, u32(1)), "malformed"),  # truncated: no path
        (pkt(sftp.OPEN, u32(1), u32(999), b"abc"), "truncated string"),
        (pkt(sftp.WRITE, u32(1), s(H1), u64(0), u32(100), b"short"), "WRITE"),
        (pkt(sftp.WRITE, u32(1), u32(100_000)), "truncated string"),  # huge handle
    ],
)
def test_malformed_client_stream_breaks_that_direction(raw, why):
    insp = SftpInspector()
    assert insp.client_data(INIT + raw) == []
    assert insp.broken and why in insp.reason and insp.reason.startswith("client")
    # nothing more is inspected on that side, and nothing raises
    assert insp.client_data(pkt(sftp.REMOVE, u32(9), s("/x"))) == []
    # the other direction goes on
    assert insp.server_data(VERSION + status(1)) == []
    assert insp.broken_directions == ("client",)


def test_malformed_server_stream():
    insp = SftpInspector()
    insp.client_data(open_(1, "/f", R) + read(2, H1, 0, 10))
    assert insp.server_data(handle(1, H1) + pkt(sftp.DATA, u32(2), u32(50), b"x")) == []
    assert insp.broken and insp.reason.startswith("server: DATA")
    assert insp.server_data(status(3)) == []
    # events before the bad packet in the same chunk are kept
    insp = SftpInspector()
    insp.client_data(pkt(sftp.REMOVE, u32(1), s("/x")))
    got = insp.client_data(pkt(sftp.REMOVE, u32(2), s("/y")) + b"\xff" * 8)
    assert got == [FileOperation("remove", "/y")] and insp.broken


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=20))
def test_random_bytes_never_raise(chunks):
    insp = SftpInspector()
    for to_server, chunk in chunks:
        (insp.client_data if to_server else insp.server_data)(chunk)
    insp.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([raw for _, raw in SESSION]), max_size=30), st.lists(st.booleans(), max_size=30))
def test_valid_packets_in_any_order_never_break(raws, sides):
    insp = SftpInspector()
    for raw, to_server in zip(raws, sides, strict=False):
        (insp.client_data if to_server else insp.server_data)(raw)
    assert not insp.broken, insp.reason
    assert all(t.status == "unclosed" for t in insp.close())


def test_unclosed_file_reported_once():
    insp = SftpInspector()
    insp.client_data(open_(1, "/a", R))
    insp.server_data(handle(1, H1))
    insp.client_data(read(2, H1, 0, 5))
    insp.server_data(data(2, b"12345"))
    assert insp.close() == [Transfer("/a", "read", 5, 0, "unclosed")]
    assert insp.close() == []


def test_reused_handle_reports_the_earlier_file():
    insp = SftpInspector()
    insp.client_data(open_(1, "/a", W))
    insp.server_data(handle(1, H1))
    insp.client_data(open_(2, "/b", R))
    assert insp.server_data(handle(2, H1)) == [Transfer("/a", "write", 0, 0, "unclosed")]


def test_100_mb_of_writes_in_64_kib_chunks_are_counted_exactly():
    # Counted, not timed: how fast the inspector is belongs in bench/, not in a pass/fail test.
    insp = SftpInspector()
    insp.client_data(open_(1, "/big", W | C))
    insp.server_data(handle(1, H1))
    block = b"\xab" * 32768
    stream = b"".join(write(i, H1, i * 32768, block) for i in range(2, 3202))  # 100 MiB
    for offset in range(0, len(stream), 65536):
        assert insp.client_data(stream[offset : offset + 65536]) == []
    assert not insp.broken
    assert insp.close() == [Transfer("/big", "write", 0, 3200 * 32768, "unclosed")]


# --- A real session: asyncssh client -> tapping bridge -> a real SFTP server --------
# The bridge stands where the bastion does: it relays the raw SFTP subsystem bytes of
# each direction and shows them to the inspector on the way.

asyncssh = pytest.importorskip("asyncssh")
OPENSSH_SFTP_SERVER = shutil.which("sftp-server") or "/usr/lib/openssh/sftp-server"


class _Bridge(asyncssh.SSHServerSession):
    def __init__(self, upstream, insp: SftpInspector, events: list) -> None:
        self.upstream, self.insp, self.events = upstream, insp, events
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def connection_made(self, chan) -> None:
        self.chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    def data_received(self, data: bytes, datatype) -> None:
        self.events += self.insp.client_data(data)
        self.queue.put_nowait(data)

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return True

    async def run(self) -> None:
        async with self.upstream() as (reader, writer):

            async def up() -> None:
                while (chunk := await self.queue.get()) is not None:
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()

            async def down() -> None:
                while chunk := await reader.read(65536):
                    self.events += self.insp.server_data(chunk)
                    self.chan.write(chunk)

            await asyncio.gather(up(), down())
        self.chan.exit(0)


class _NoAuth(asyncssh.SSHServer):
    def __init__(self, session=None) -> None:
        self.session = session

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self):
        return self.session()


def _client(port: int):
    return asyncssh.connect("127.0.0.1", port, known_hosts=None, username="u", client_keys=None, agent_path=None)


async def _real_session(root: Path, target: str):
    key = asyncssh.generate_private_key("ssh-ed25519")
    events: list = []
    bridges: list[_Bridge] = []
    # asyncssh's server takes packets of up to 4 MiB, and its client sends them so
    insp = SftpInspector(max_packet=asyncssh.sftp.MAX_SFTP_PACKET_LEN, openssh_symlink=target == "openssh")
    async with contextlib.AsyncExitStack() as stack:
        if target == "openssh":  # OpenSSH's sftp-server as a child process

            @contextlib.asynccontextmanager
            async def upstream():
                child = await asyncio.create_subprocess_exec(
                    OPENSSH_SFTP_SERVER, "-d", str(root), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
                yield child.stdout, child.stdin
                await child.wait()
        else:  # asyncssh's SFTP server behind an SSH connection
            server = await stack.enter_async_context(
                await asyncssh.listen(
                    "127.0.0.1",
                    0,
                    server_host_keys=[key],
                    server_factory=_NoAuth,
                    sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)),
                )
            )

            @contextlib.asynccontextmanager
            async def upstream():
                async with _client(server.sockets[0].getsockname()[1]) as up:
                    proc = await up.create_process(subsystem="sftp", encoding=None)
                    yield proc.stdout, proc.stdin

        def bridge_session() -> _Bridge:
            bridge = _Bridge(upstream, insp, events)
            bridges.append(bridge)
            return bridge

        # asyncssh clients send SYMLINK in OpenSSH's order only to a server whose
        # banner says OpenSSH, so the bridge passes for one when sftp-server is behind
        banner = {"server_version": "OpenSSH_9.9 bridge"} if target == "openssh" else {}
        bastion = await stack.enter_async_context(
            await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[key],
                encoding=None,
                **banner,
                server_factory=lambda: _NoAuth(bridge_session),
            )
        )
        local = root.parent / "local"
        local.mkdir()
        (local / "up.bin").write_bytes(os.urandom(300_000))
        (root / "down.bin").write_bytes(os.urandom(123_456))
        port = bastion.sockets[0].getsockname()[1]
        async with _client(port) as conn, conn.start_sftp_client() as client:
            await client.put(str(local / "up.bin"), "up.bin")
            await client.get("down.bin", str(local / "down.bin"))
            await client.rename("up.bin", "up2.bin")
            await client.posix_rename("up2.bin", "up3.bin")
            await client.mkdir("dir")
            await client.rmdir("dir")
            await client.symlink("down.bin", "link")
            await client.remove("up3.bin")
        # The bridge has relayed the session to its end (both directions closed), so it has inspected every byte.
        await asyncio.wait_for(asyncio.gather(*(bridge.task for bridge in bridges)), 10)
    return events, insp


@pytest.mark.parametrize("target", ["asyncssh", pytest.param("openssh", marks=pytest.mark.e2e)])  # sftp-server
def test_real_session_through_a_tapping_bridge(tmp_path, target):
    if target == "openssh":  # openssh-server depends on it; scripts/setup installs openssh-server
        assert os.access(OPENSSH_SFTP_SERVER, os.X_OK), f"{OPENSSH_SFTP_SERVER} is missing: run scripts/setup"
    root = tmp_path / "root"
    root.mkdir()
    events, insp = asyncio.run(asyncio.wait_for(_real_session(root, target), 60))
    assert not insp.broken, insp.reason
    assert insp.close() == []
    assert [e for e in events if isinstance(e, Transfer)] == [
        Transfer("up.bin", "write", 0, 300_000, "ok"),
        Transfer("down.bin", "read", 123_456, 0, "ok"),
    ]
    assert [e for e in events if isinstance(e, FileOperation)] == [
        FileOperation("rename", "up.bin", "up2.bin"),
        FileOperation("rename", "up2.bin", "up3.bin"),
        FileOperation("mkdir", "dir"),
        FileOperation("rmdir", "dir"),
        FileOperation("symlink", "link", "down.bin"),
        FileOperation("remove", "up3.bin"),
    ]
    # what the inspector reported is what the target did to the file system
    assert not (root / "up3.bin").exists() and (root / "down.bin").exists()
    assert (root / "link").is_symlink()
    if target == "openssh":  # asyncssh's chroot rewrites the link's target
        assert os.readlink(root / "link") == "down.bin"
