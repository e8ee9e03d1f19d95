#!/usr/bin/env python3
"""Independent Majordomo peers for interop tests, written straight from the RFCs with pyzmq.

They share no code with plantd: 7/MDP (MDP/0.1) client, worker and a minimal broker, and
18/MDP (MDP/0.2) client and worker. Body frames are passed and printed as hex so tests can use
empty and binary frames.

Usage:
  mdp_peers.py client01 ENDPOINT SERVICE [HEXFRAME...]   # prints the reply as a JSON list of hex frames
  mdp_peers.py client02 ENDPOINT SERVICE [HEXFRAME...]   # prints every reply: [["partial"|"final", [hex...]], ...]
  mdp_peers.py worker01 ENDPOINT SERVICE                 # echoes bodies, prefixed with a b"py01" frame
  mdp_peers.py worker02 ENDPOINT SERVICE                 # one PARTIAL b"py02-partial", then FINAL b"py02" + body
  mdp_peers.py broker01 ENDPOINT                         # minimal RFC 7 broker (0.1 only); prints "READY" once bound
Workers and the broker run until killed. Clients time out after 10 s with exit code 2.

CURVE: with MDP_CURVE_SERVER_KEY (the broker's public key, Z85) and MDP_CURVE_SECRET_KEY_FILE (a
NAME.key file as `plant keys generate` writes it) in the environment, clients and workers are
CURVE clients (pyzmq's wheels ship libzmq with libsodium).
"""

import json
import sys
import time

import zmq

HEARTBEAT_INTERVAL = 0.25  # seconds; tests configure plantd with a matching interval
HEARTBEAT_LIVENESS = 5
# How long broker01 keeps a silent worker: lenient, so that workers heartbeating at their own
# slower interval (plant bench's every second) stay registered on a loaded machine.
BROKER_WORKER_EXPIRY = 5.0
CLIENT_TIMEOUT_MS = 10_000


def secure(sock):
    """Makes `sock` a CURVE client when the environment names the keys (module docs)."""
    import os

    server = os.environ.get("MDP_CURVE_SERVER_KEY")
    secret_file = os.environ.get("MDP_CURVE_SECRET_KEY_FILE")
    if not server or not secret_file:
        return sock
    with open(secret_file, "rb") as f:
        secret = f.read().strip()
    sock.curve_secretkey = secret
    sock.curve_publickey = zmq.curve_public(secret)
    sock.curve_serverkey = server.encode()
    return sock


def unhex(frames):
    return [bytes.fromhex(f) for f in frames]


def hexed(frames):
    return [f.hex() for f in frames]


# ---- 7/MDP -------------------------------------------------------------------------------------

def client01(endpoint, service, body):
    """RFC 7 client on a REQ socket: [MDPC01, service, body...] -> [MDPC01, service, body...]."""
    ctx = zmq.Context()
    sock = secure(ctx.socket(zmq.REQ))
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart([b"MDPC01", service.encode()] + body)
    if not sock.poll(CLIENT_TIMEOUT_MS):
        print("timeout", file=sys.stderr)
        sys.exit(2)
    reply = sock.recv_multipart()
    assert reply[0] == b"MDPC01", reply
    assert reply[1] == service.encode(), reply
    print(json.dumps(hexed(reply[2:])))


def worker01(endpoint, service):
    """RFC 7 worker on a DEALER socket (sends the empty frame a REQ would)."""
    ctx = zmq.Context()

    def connect():
        s = secure(ctx.socket(zmq.DEALER))
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart([b"", b"MDPW01", b"\x01", service.encode()])
        return s

    sock = connect()
    liveness = HEARTBEAT_LIVENESS
    next_hb = time.monotonic() + HEARTBEAT_INTERVAL
    while True:
        if sock.poll(int(HEARTBEAT_INTERVAL * 1000)):
            msg = sock.recv_multipart()
            liveness = HEARTBEAT_LIVENESS
            assert msg[0] == b"" and msg[1] == b"MDPW01", msg
            cmd = msg[2]
            if cmd == b"\x02":  # REQUEST: client, "", body...
                client, empty, body = msg[3], msg[4], msg[5:]
                assert empty == b""
                sock.send_multipart([b"", b"MDPW01", b"\x03", client, b"", b"py01"] + body)
            elif cmd == b"\x05":  # DISCONNECT
                sock.close()
                sock = connect()
        else:
            liveness -= 1
            if liveness == 0:
                sock.close()
                sock = connect()
                liveness = HEARTBEAT_LIVENESS
        if time.monotonic() > next_hb:
            sock.send_multipart([b"", b"MDPW01", b"\x04"])
            next_hb = time.monotonic() + HEARTBEAT_INTERVAL


def broker01(endpoint):
    """Minimal RFC 7 broker: one ROUTER, per-service FIFO of requests and of idle workers, and
    8/MMI's mmi.service. Like the zguide's broker it speaks only 0.1 and drops anything else
    unanswered (an MDP/0.2 peer's messages included)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(endpoint)
    print("READY", flush=True)
    services = {}  # name -> {"requests": [], "waiting": []}
    workers = {}  # id -> {"service": name, "expiry": t}
    next_hb = time.monotonic() + HEARTBEAT_INTERVAL

    def service(name):
        return services.setdefault(name, {"requests": [], "waiting": []})

    def dispatch(svc):
        s = service(svc)
        while s["requests"] and s["waiting"]:
            wid = s["waiting"].pop(0)
            client, body = s["requests"].pop(0)
            sock.send_multipart([wid, b"", b"MDPW01", b"\x02", client, b""] + body)

    def refresh(wid):
        workers[wid]["expiry"] = time.monotonic() + BROKER_WORKER_EXPIRY

    def on_client(sender, svc, body):
        if svc == b"mmi.service":
            name = body[0] if body else b""
            known = any(w["service"] == name for w in workers.values())
            sock.send_multipart([sender, b"", b"MDPC01", svc, b"200" if known else b"404"])
        elif svc.startswith(b"mmi."):
            sock.send_multipart([sender, b"", b"MDPC01", svc, b"501"])
        else:
            service(svc)["requests"].append((sender, body))
            dispatch(svc)

    def on_worker(sender, cmd, rest):
        if cmd == b"\x01" and sender not in workers:  # READY: service [, extra frames ignored]
            svc = rest[0]
            workers[sender] = {"service": svc}
            refresh(sender)
            service(svc)["waiting"].append(sender)
            dispatch(svc)
        elif cmd == b"\x03" and sender in workers:  # REPLY: client, "", body...
            client, body = rest[0], rest[2:]
            svc = workers[sender]["service"]
            sock.send_multipart([client, b"", b"MDPC01", svc] + body)
            refresh(sender)
            service(svc)["waiting"].append(sender)
            dispatch(svc)
        elif cmd == b"\x04" and sender in workers:  # HEARTBEAT
            refresh(sender)
        elif cmd == b"\x05":  # DISCONNECT
            w = workers.pop(sender, None)
            if w and sender in service(w["service"])["waiting"]:
                service(w["service"])["waiting"].remove(sender)
        else:
            sock.send_multipart([sender, b"", b"MDPW01", b"\x05"])

    while True:
        if sock.poll(int(HEARTBEAT_INTERVAL * 1000)):
            msg = sock.recv_multipart()
            # 7/MDP: [sender, "", header, ...]. Anything else is not ours: drop it unanswered.
            if len(msg) >= 4 and msg[1] == b"" and msg[2] == b"MDPC01":
                on_client(msg[0], msg[3], msg[4:])
            elif len(msg) >= 4 and msg[1] == b"" and msg[2] == b"MDPW01":
                try:
                    on_worker(msg[0], msg[3], msg[4:])
                except IndexError:
                    pass
        now = time.monotonic()
        if now > next_hb:
            for wid, w in list(workers.items()):
                if w["expiry"] < now:
                    workers.pop(wid)
                    if wid in service(w["service"])["waiting"]:
                        service(w["service"])["waiting"].remove(wid)
                else:
                    sock.send_multipart([wid, b"", b"MDPW01", b"\x04"])
            next_hb = now + HEARTBEAT_INTERVAL


# ---- 18/MDP ------------------------------------------------------------------------------------

def client02(endpoint, service, body):
    """RFC 18 client on a DEALER socket: collects PARTIALs until the FINAL."""
    ctx = zmq.Context()
    sock = secure(ctx.socket(zmq.DEALER))
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart([b"MDPC02", b"\x01", service.encode()] + body)
    replies = []
    while True:
        if not sock.poll(CLIENT_TIMEOUT_MS):
            print("timeout", file=sys.stderr)
            sys.exit(2)
        msg = sock.recv_multipart()
        assert msg[0] == b"MDPC02", msg
        assert msg[2] == service.encode(), msg
        if msg[1] == b"\x02":
            replies.append(["partial", hexed(msg[3:])])
        elif msg[1] == b"\x03":
            replies.append(["final", hexed(msg[3:])])
            break
        else:
            raise AssertionError(msg)
    print(json.dumps(replies))


def worker02(endpoint, service):
    """RFC 18 worker: no empty frames, single-byte commands 0x01..0x06."""
    ctx = zmq.Context()

    def connect():
        s = secure(ctx.socket(zmq.DEALER))
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart([b"MDPW02", b"\x01", service.encode()])
        return s

    sock = connect()
    liveness = HEARTBEAT_LIVENESS
    next_hb = time.monotonic() + HEARTBEAT_INTERVAL
    while True:
        if sock.poll(int(HEARTBEAT_INTERVAL * 1000)):
            msg = sock.recv_multipart()
            liveness = HEARTBEAT_LIVENESS
            assert msg[0] == b"MDPW02", msg
            cmd = msg[1]
            if cmd == b"\x02":
                client, empty, body = msg[2], msg[3], msg[4:]
                assert empty == b""
                sock.send_multipart([b"MDPW02", b"\x03", client, b"", b"py02-partial"])
                sock.send_multipart([b"MDPW02", b"\x04", client, b"", b"py02"] + body)
            elif cmd == b"\x06":
                sock.close()
                sock = connect()
        else:
            liveness -= 1
            if liveness == 0:
                sock.close()
                sock = connect()
                liveness = HEARTBEAT_LIVENESS
        if time.monotonic() > next_hb:
            sock.send_multipart([b"MDPW02", b"\x05"])
            next_hb = time.monotonic() + HEARTBEAT_INTERVAL


def main(argv):
    role = argv[1]
    if role == "client01":
        client01(argv[2], argv[3], unhex(argv[4:]))
    elif role == "client02":
        client02(argv[2], argv[3], unhex(argv[4:]))
    elif role == "worker01":
        worker01(argv[2], argv[3])
    elif role == "worker02":
        worker02(argv[2], argv[3])
    elif role == "broker01":
        broker01(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)


if __name__ == "__main__":
    main(sys.argv)
