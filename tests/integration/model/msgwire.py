"""Minimal flowlog wire client (proto/PROTOCOL.md): msgpack in u32-BE length-prefixed frames.

Stdlib only; drive.py reads state over it (one connection per tenant, one request at a time),
much faster than one CLI process per read.
"""
import socket
import struct


class Ext:
    def __init__(self, code, data):
        self.code, self.data = code, data


def pack(o, out):
    if o is None:
        out.append(b"\xc0")
    elif o is True:
        out.append(b"\xc3")
    elif o is False:
        out.append(b"\xc2")
    elif isinstance(o, int):
        if 0 <= o < 128:
            out.append(bytes([o]))
        elif -32 <= o < 0:
            out.append(struct.pack("b", o))
        elif 0 <= o < 2 ** 64:
            out.append(b"\xcf" + struct.pack(">Q", o))
        else:
            out.append(b"\xd3" + struct.pack(">q", o))
    elif isinstance(o, float):
        out.append(b"\xcb" + struct.pack(">d", o))
    elif isinstance(o, str):
        b = o.encode("utf-8")
        if len(b) < 32:
            out.append(bytes([0xa0 | len(b)]))
        else:
            out.append(b"\xdb" + struct.pack(">I", len(b)))
        out.append(b)
    elif isinstance(o, (bytes, bytearray)):
        out.append(b"\xc6" + struct.pack(">I", len(o)) + bytes(o))
    elif isinstance(o, (list, tuple)):
        out.append(b"\xdd" + struct.pack(">I", len(o)))
        for x in o:
            pack(x, out)
    elif isinstance(o, dict):
        out.append(b"\xdf" + struct.pack(">I", len(o)))
        for k, v in o.items():
            pack(k, out)
            pack(v, out)
    else:
        raise TypeError(type(o))


def packb(o):
    out = []
    pack(o, out)
    return b"".join(out)


def unpackb(b):
    v, i = _un(b, 0)
    assert i == len(b)
    return v


def _un(b, i):
    c = b[i]
    i += 1
    if c < 0x80:
        return c, i
    if c >= 0xe0:
        return c - 256, i
    if 0x80 <= c <= 0x8f:
        return _map(b, i, c & 15)
    if 0x90 <= c <= 0x9f:
        return _arr(b, i, c & 15)
    if 0xa0 <= c <= 0xbf:
        n = c & 31
        return b[i:i + n].decode("utf-8"), i + n
    if c == 0xc0:
        return None, i
    if c == 0xc2:
        return False, i
    if c == 0xc3:
        return True, i
    fixed = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i",
             0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
    if c in fixed:
        f = fixed[c]
        n = struct.calcsize(f)
        return struct.unpack(f, b[i:i + n])[0], i + n
    if c in (0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6):
        ln = {0xd9: 1, 0xda: 2, 0xdb: 4, 0xc4: 1, 0xc5: 2, 0xc6: 4}[c]
        n = int.from_bytes(b[i:i + ln], "big")
        i += ln
        raw = b[i:i + n]
        return (raw.decode("utf-8") if c in (0xd9, 0xda, 0xdb) else bytes(raw)), i + n
    if c in (0xdc, 0xdd):
        ln = 2 if c == 0xdc else 4
        return _arr(b, i + ln, int.from_bytes(b[i:i + ln], "big"))
    if c in (0xde, 0xdf):
        ln = 2 if c == 0xde else 4
        return _map(b, i + ln, int.from_bytes(b[i:i + ln], "big"))
    if c in (0xd4, 0xd5, 0xd6, 0xd7, 0xd8):
        n = {0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}[c]
        t = struct.unpack("b", b[i:i + 1])[0]
        return _ext(t, b[i + 1:i + 1 + n]), i + 1 + n
    if c in (0xc7, 0xc8, 0xc9):
        ln = {0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
        n = int.from_bytes(b[i:i + ln], "big")
        i += ln
        t = struct.unpack("b", b[i:i + 1])[0]
        return _ext(t, b[i + 1:i + 1 + n]), i + 1 + n
    raise ValueError("bad msgpack byte %x" % c)


def _ext(t, data):
    if t == -1:  # timestamp -> microseconds
        if len(data) == 4:
            return TS(struct.unpack(">I", data)[0] * 1000000)
        if len(data) == 8:
            w = struct.unpack(">Q", data)[0]
            ns, s = w >> 34, w & ((1 << 34) - 1)
            return TS(s * 1000000 + ns // 1000)
        ns = struct.unpack(">I", data[:4])[0]
        s = struct.unpack(">q", data[4:])[0]
        return TS(s * 1000000 + ns // 1000)
    return Ext(t, data)


class TS(int):
    pass


def _arr(b, i, n):
    out = []
    for _ in range(n):
        v, i = _un(b, i)
        out.append(v)
    return out, i


def _map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _un(b, i)
        v, i = _un(b, i)
        out[k] = v
    return out, i


class Client:
    def __init__(self, host, port, token, tenant=None, timeout=None):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.nid = 1
        req = {"id": 0, "op": "hello", "version": 1, "token": token}
        if tenant:
            req["tenant"] = tenant
        self._send(req)
        r = self._recv()
        if not r.get("ok"):
            raise RuntimeError(r)

    def _send(self, o):
        b = packb(o)
        self.s.sendall(struct.pack(">I", len(b)) + b)

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            x = self.s.recv(n - len(buf))
            if not x:
                raise EOFError
            buf += x
        return buf

    def _recv(self):
        n = struct.unpack(">I", self._read(4))[0]
        return unpackb(self._read(n))

    def call(self, op, **kw):
        rid = self.nid
        self.nid += 1
        req = {"id": rid, "op": op}
        req.update(kw)
        self._send(req)
        r = self._recv()
        assert r["id"] == rid, r
        return r

    def close(self):
        self.s.close()
