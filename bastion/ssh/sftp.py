"""SFTP inspector: watches both directions of an SFTP v3 channel and reports transfers.

Pure and I/O-free, in the style of h11: feed the raw bytes of each direction, split
anywhere, and get back events. Packet layouts follow draft-ietf-secsh-filexfer-02 as
implemented by OpenSSH (PROTOCOL, sftp-server.c). Payloads are never retained: for a
WRITE or DATA packet only its head is buffered and the rest is skipped by count.
A framing or parsing error stops inspection of that direction (`broken`, `reason`);
the inspector itself never raises.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Packet types (draft-ietf-secsh-filexfer-02, section 3)
OPEN, CLOSE, READ, WRITE, SETSTAT = 3, 4, 5, 6, 9
REMOVE, MKDIR, RMDIR, RENAME, SYMLINK = 13, 14, 15, 18, 20
STATUS, HANDLE, DATA, EXTENDED = 101, 102, 103, 200
# OPEN pflags that can create or modify the file (CREAT alone still creates it)
FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC = 0x02, 0x04, 0x08, 0x10
_MODIFYING = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
# SSH_FX_* status codes, as lowercase short names ("ok" is SSH_FX_OK)
STATUS_NAMES: tuple[str, ...] = ("ok", "eof", "no_such_file", "permission_denied", "failure", "bad_message")
STATUS_NAMES += ("no_connection", "connection_lost", "op_unsupported")

MAX_PACKET = 256 * 1024 + 4096  # OpenSSH's SFTP_MAX_MSG_LENGTH plus a margin
WRITE_HEAD = 4 + 4 + 256 + 8 + 4  # WRITE head: id, handle (at most 256 bytes), offset, len
_PATH_OPS = {REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir", SETSTAT: "setstat"}
_EXT_OPS = {
    b"posix-rename@openssh.com": "rename",
    b"hardlink@openssh.com": "hardlink",
    b"lsetstat@openssh.com": "setstat",
}
# Bodies buffered whole (small requests/replies), or only up to their head
_CLIENT_CAPS = {t: MAX_PACKET for t in (OPEN, CLOSE, READ, RENAME, SYMLINK, EXTENDED, *_PATH_OPS)} | {WRITE: WRITE_HEAD}
_SERVER_CAPS = {STATUS: 8, HANDLE: MAX_PACKET, DATA: 8}  # id and code / data length
_MAX_PENDING = 65536  # outstanding requests kept per kind; the oldest go first
_MAX_FILES = 4096  # open handles tracked; the oldest is reported "unclosed" past this
# C0, DEL, C1 and the bidirectional overrides that could disguise a path to a reader
_CONTROLS = dict.fromkeys(
    [*range(32), *range(127, 160), 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
_U32 = struct.Struct(">I")
_HDR = struct.Struct(">IB")


@dataclass(frozen=True, slots=True)
class Transfer:
    """A file opened and closed through SFTP, with what moved."""

    path: str
    op: str  # "read", "write", or "read-write" when both happened
    bytes_read: int  # bytes the client read from the file (sum of DATA replies)
    bytes_written: int  # bytes the client wrote (sum of WRITE payload lengths)
    status: str  # "ok" or the SSH_FX status name of the CLOSE reply, or "unclosed"


@dataclass(frozen=True, slots=True)
class FileOperation:
    """A non-transfer change: remove, rename, mkdir, rmdir, setstat, symlink, hardlink."""

    op: str
    path: str
    target: str = ""  # rename/symlink/hardlink destination (what the link points to)


class _Malformed(Exception):
    pass


class _File:
    __slots__ = ("path", "pflags", "read", "written")

    def __init__(self, path: str, pflags: int) -> None:
        self.path, self.pflags, self.read, self.written = path, pflags, 0, 0

    def transfer(self, status: str) -> Transfer | None:
        r, w = self.read, self.written
        if not (r or w or self.pflags & _MODIFYING):
            return None
        op = "read-write" if r and w else "read" if r else "write"
        return Transfer(self.path, op, r, w, status)


def clean_path(raw: bytes) -> str:
    """Decode a path for display: UTF-8 with replacement, control characters removed."""
    return raw.decode("utf-8", "replace").translate(_CONTROLS)


def _u32(b: bytes, off: int) -> tuple[int, int]:
    return _U32.unpack_from(b, off)[0], off + 4


def _string(b: bytes, off: int) -> tuple[bytes, int]:
    n, off = _u32(b, off)
    if off + n > len(b):
        raise _Malformed("truncated string")
    return b[off : off + n], off + n


def _evict(d: dict, limit: int) -> None:
    while len(d) > limit:
        del d[next(iter(d))]


class _Direction:
    """Frames one direction: buffers a packet's header and head, skips the rest."""

    __slots__ = ("body", "broken", "buf", "caps", "max_packet", "name", "need", "ptype", "skip")

    def __init__(self, name: str, caps: dict[int, int], max_packet: int) -> None:
        self.name, self.caps, self.max_packet = name, caps, max_packet
        self.buf, self.need, self.body, self.ptype, self.skip = bytearray(), 5, -1, 0, 0
        self.broken = ""

    def feed(self, data: bytes, handle, out: list) -> None:
        mv, pos, end = memoryview(data), 0, len(data)
        while True:
            if self.skip:
                k = min(self.skip, end - pos)
                self.skip -= k
                pos += k
                if self.skip:
                    break
            want = self.need - len(self.buf)
            if want > 0:
                if pos >= end:
                    break
                take = min(want, end - pos)
                self.buf += mv[pos : pos + take]
                pos += take
                if take < want:
                    break
            if self.body < 0:  # header complete: length and type
                length, self.ptype = _HDR.unpack(self.buf)
                if not 1 <= length <= self.max_packet:
                    raise _Malformed(f"packet length {length} out of range")
                self.body = length - 1
                self.need = min(self.body, self.caps.get(self.ptype, 0))
            else:  # head complete: dispatch, then skip the rest of the body
                if self.need:
                    out += handle(self.ptype, bytes(self.buf), self.body)
                self.skip, self.body, self.need = self.body - len(self.buf), -1, 5
            self.buf = bytearray()


class SftpInspector:
    """Follows one SFTP session from both sides; see the module docstring.

    `openssh_symlink`: SYMLINK arguments in OpenSSH's (reversed) order, target first.
    """

    def __init__(self, *, max_packet: int = MAX_PACKET, openssh_symlink: bool = True):
        self._client = _Direction("client", _CLIENT_CAPS, max_packet)
        self._server = _Direction("server", _SERVER_CAPS, max_packet)
        self._openssh_symlink = openssh_symlink
        self._opens: dict[int, tuple[str, int]] = {}  # request id -> path, pflags
        self._reads: dict[int, bytes] = {}  # request id -> handle
        self._closes: dict[int, bytes] = {}  # request id -> handle
        self._files: dict[bytes, _File] = {}  # handle -> open file
        self.broken = False
        self.reason = ""

    @property
    def held(self) -> int:
        """Bytes of the client's stream held for a packet not yet complete (a WRITE's payload is skipped)."""
        return len(self._client.buf)

    @property
    def broken_directions(self) -> tuple[str, ...]:
        """Which directions stopped being inspected ("client", "server")."""
        return tuple(d.name for d in (self._client, self._server) if d.broken)

    def client_data(self, data: bytes) -> list[Transfer | FileOperation]:
        return self._feed(self._client, data, self._on_client)

    def server_data(self, data: bytes) -> list[Transfer | FileOperation]:
        return self._feed(self._server, data, self._on_server)

    def close(self) -> list[Transfer]:
        """Report the files still open, with status "unclosed", and forget them."""
        files, self._files = self._files, {}
        self._opens.clear()
        self._reads.clear()
        self._closes.clear()
        return [t for f in files.values() if (t := f.transfer("unclosed"))]

    def _feed(self, d: _Direction, data: bytes, handle) -> list:
        out: list = []
        if d.broken:
            return out
        try:
            d.feed(data, handle, out)
        except Exception as exc:  # on the data path: record, never raise
            what = str(exc) if isinstance(exc, _Malformed) else f"malformed packet ({exc!r})"
            d.broken = f"{d.name}: {what}"
            d.buf, d.skip = bytearray(), 0
            self.broken = True
            self.reason = "; ".join(x.broken for x in (self._client, self._server) if x.broken)
        return out

    def _on_client(self, ptype: int, b: bytes, body: int) -> list:
        rid, off = _u32(b, 0)
        if ptype == WRITE:
            h, off = _string(b, off)
            n, off = _u32(b, off + 8)
            if off + n > body:
                raise _Malformed("WRITE data longer than its packet")
            if (f := self._files.get(h)) is not None:
                f.written += n
        elif ptype in (READ, CLOSE):
            h, _ = _string(b, off)
            if h in self._files:
                pending = self._reads if ptype == READ else self._closes
                pending[rid] = h
                _evict(pending, _MAX_PENDING)
        elif ptype == OPEN:
            path, off = _string(b, off)
            self._opens[rid] = (clean_path(path), _u32(b, off)[0])
            _evict(self._opens, _MAX_PENDING)
        elif ptype in _PATH_OPS:
            return [FileOperation(_PATH_OPS[ptype], clean_path(_string(b, off)[0]))]
        else:  # RENAME, SYMLINK, EXTENDED
            op = {RENAME: "rename", SYMLINK: "symlink"}.get(ptype)
            if ptype == EXTENDED:
                name, off = _string(b, off)
                op = _EXT_OPS.get(name)
            if op is None:
                return []
            first, off = _string(b, off)
            if op == "setstat":
                return [FileOperation(op, clean_path(first))]
            second, _ = _string(b, off)
            if op == "hardlink" or (op == "symlink" and self._openssh_symlink):
                first, second = second, first  # as (the new link, what it points to)
            return [FileOperation(op, clean_path(first), clean_path(second))]
        return []

    def _on_server(self, ptype: int, b: bytes, body: int) -> list:
        rid, off = _u32(b, 0)
        if ptype == DATA:
            n, off = _u32(b, off)
            if off + n > body:
                raise _Malformed("DATA longer than its packet")
            h = self._reads.pop(rid, None)
            if h is not None and (f := self._files.get(h)) is not None:
                f.read += n
        elif ptype == HANDLE:
            h, _ = _string(b, off)
            if (opened := self._opens.pop(rid, None)) is not None:
                # a reused handle means its earlier file was closed out of our sight
                gone = [self._files.pop(h)] if h in self._files else []
                self._files[h] = _File(*opened)
                if len(self._files) > _MAX_FILES:
                    gone.append(self._files.pop(next(iter(self._files))))
                return [t for f in gone if (t := f.transfer("unclosed"))]
        else:  # STATUS: ends an OPEN, a READ (EOF) or a CLOSE
            code, _ = _u32(b, off)
            self._opens.pop(rid, None)
            self._reads.pop(rid, None)
            h = self._closes.pop(rid, None)
            if h is not None and (f := self._files.pop(h, None)) is not None:
                name = STATUS_NAMES[code] if code < len(STATUS_NAMES) else f"status_{code}"
                return [t] if (t := f.transfer(name)) else []
        return []
