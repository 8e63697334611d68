#!/usr/bin/env python3
# A raw NBD client for NBD_OPT_TIDEMARK_COPY (native/src/nbd_proto.h): the
# option as any client could send it, with or without a descriptor, so a test
# sees the server's own answers (the copier in native/ always sends a good
# one). Usage: nbd-copy-option.py SPEC-JSON
#   {"socket": PATH, "ops": [{"export": NAME, "offset": N, "length": N,
#     "flags": N, "fd": "rw"|"ro"|"append"|"pipe"|"none", "path": FILE}, ...]}
# Runs the ops in order on one connection, then NBD_OPT_ABORT; prints one
# JSON list: per op, its replies [{"type": "copied"|"ack"|"err", ...}].
import json
import os
import socket
import struct
import sys

OPT_MAGIC = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
OPT_COPY = 0x544D4301
REP_COPIED = 0x544D4301
REP_ACK = 1
ERRS = {1: "UNSUP", 2: "POLICY", 3: "INVALID", 6: "UNKNOWN"}


def read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise SystemExit("the server closed the connection")
        b += chunk
    return b


def main():
    spec = json.loads(sys.argv[1])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(spec["socket"])
    hello = read_exact(s, 18)
    assert hello[:8] == b"NBDMAGIC", "not an NBD server"
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    out = []
    for op in spec["ops"]:
        name = op["export"].encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">QQI", op["offset"], op["length"], op.get("flags", 0))
        msg = struct.pack(">QII", OPT_MAGIC, OPT_COPY, len(data)) + data
        mode = op.get("fd", "rw")
        if mode == "none":
            s.sendall(msg)
        elif mode == "pipe":
            r, w = os.pipe()
            socket.send_fds(s, [msg], [w])
            os.close(r)
            os.close(w)
        else:
            flags = {"rw": os.O_RDWR, "ro": os.O_RDONLY, "append": os.O_WRONLY | os.O_APPEND}[mode]
            fd = os.open(op["path"], flags)
            socket.send_fds(s, [msg], [fd])
            os.close(fd)
        replies = []
        while True:
            magic, opt, typ, length = struct.unpack(">QIII", read_exact(s, 20))
            assert magic == REPLY_MAGIC and opt == OPT_COPY, "bad option reply"
            body = read_exact(s, length)
            if typ & 0x80000000:
                replies.append({"type": "err", "name": ERRS.get(typ & 0x7FFFFFFF, str(typ & 0x7FFFFFFF)), "text": body.decode()})
                break
            if typ == REP_COPIED:
                status, data_bytes, runs, zero = struct.unpack(">BQQQ", body[:25])
                replies.append({"type": "copied", "status": status, "dataBytes": data_bytes, "dataRuns": runs, "zeroBytes": zero, "text": body[25:].decode()})
                continue
            if typ == REP_ACK:
                replies.append({"type": "ack"})
                break
            replies.append({"type": str(typ)})
        out.append(replies)
    s.sendall(struct.pack(">QII", OPT_MAGIC, 2, 0))  # NBD_OPT_ABORT
    print(json.dumps(out))


main()
