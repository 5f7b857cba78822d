#!/usr/bin/env python3
"""Does logging stall the event loop when nobody reads the proxy's output?

Starts socksloop with its stderr and stdout on pipes that are either drained continuously
("drained") or never read until the clients are done ("blocked": a journald that stopped
reading, a `| less` left open), then makes CLIENTS sequential SOCKS5 CONNECTs to an echo
target, each round-tripping 16 bytes, with a per-step timeout. Prints how many were served,
how long that took, and the first client that got no answer. At the end it reads whatever the
proxy wrote and reports the line count and any "log lines dropped" notice. For each of the
proxy's threads it prints the system call it is in (1 is write(2) on x86_64, 232 epoll_wait,
202 futex), its wait channel, and from /proc its time on a CPU and waiting for one
("runnable": on a shared machine, others' load on the proxy's core) and its context switches
(voluntary/involuntary).

    python3 scripts/log_stall.py BIN blocked|drained [CLIENTS] [-- PROXY FLAGS...]

Pin it for a steady number, e.g. `taskset -c 0 python3 scripts/log_stall.py ...`; the proxy
is started under `taskset -c 1` when the machine has a second core.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

BIN = sys.argv[1]
MODE = sys.argv[2]
assert MODE in ("blocked", "drained"), MODE
rest = sys.argv[3:]
CLIENTS = int(rest.pop(0)) if rest and rest[0] != "--" else 1000
EXTRA = rest[1:] if rest and rest[0] == "--" else []
STEP_TIMEOUT = 3.0  # seconds a client waits for any one step
MESSAGE = b"0123456789abcdef"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def echo_server():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)

    def serve(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def one_client(proxy, target):
    with socket.create_connection(proxy, timeout=STEP_TIMEOUT) as s:
        s.settimeout(STEP_TIMEOUT)
        s.sendall(b"\x05\x01\x00")
        assert recv_exact(s, 2) == b"\x05\x00"
        ip, port = target
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(ip) + struct.pack(">H", port))
        reply = recv_exact(s, 10)
        assert reply[1] == 0, reply
        s.sendall(MESSAGE)
        assert recv_exact(s, len(MESSAGE)) == MESSAGE


def main():
    target = echo_server()
    port = free_port()
    pin = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []
    proxy = subprocess.Popen(
        pin + [BIN, "--listen", "127.0.0.1:%d" % port] + EXTRA,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    captured = {"stdout": [], "stderr": []}

    def drain(name, pipe):
        for line in pipe:
            captured[name].append(line)

    drains = [
        threading.Thread(target=drain, args=("stdout", proxy.stdout), daemon=True),
        threading.Thread(target=drain, args=("stderr", proxy.stderr), daemon=True),
    ]
    if MODE == "drained":
        for t in drains:
            t.start()
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        served, first_failure, failure = 0, None, None
        latencies = []
        start = time.monotonic()
        for i in range(CLIENTS):
            t0 = time.monotonic()
            try:
                one_client(("127.0.0.1", port), target)
                served += 1
                latencies.append(time.monotonic() - t0)
            except (OSError, AssertionError, ConnectionError) as e:
                first_failure, failure = i, e
                break
        elapsed = time.monotonic() - start
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0
        print(
            "mode=%s clients=%d served=%d in %.3f s (p50 %.2f ms, p99 %.2f ms, max %.2f ms)%s"
            % (
                MODE,
                CLIENTS,
                served,
                elapsed,
                p(0.5),
                p(0.99),
                p(1.0),
                "" if first_failure is None else "; client %d got no answer: %r" % (first_failure, failure),
            )
        )
        for task in sorted(os.listdir("/proc/%d/task" % proxy.pid)):
            base = "/proc/%d/task/%s/" % (proxy.pid, task)
            try:
                name = open(base + "comm").read().strip()
                call = open(base + "syscall").read().split()[0]
                wchan = open(base + "wchan").read().strip()
            except OSError:
                continue
            run, wait, slices = open(base + "schedstat").read().split()
            switches = [l.split()[1] for l in open(base + "status") if "ctxt_switches" in l]
            # syscall 1 is write(2) on x86_64; 232 epoll_wait, 202 futex
            print(
                "  thread %-16s syscall %-4s wchan %-24s on CPU %.0f ms, runnable %.0f ms, switches %s"
                % (name, call, wchan, int(run) / 1e6, int(wait) / 1e6, "/".join(switches))
            )
        if MODE == "blocked":
            for t in drains:
                t.start()
        # Let the writer catch up once the output is read again.
        time.sleep(1.0)
    finally:
        proxy.terminate()
        try:
            proxy.wait(5)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
    for t in drains:
        t.join(5)
    for name in ("stdout", "stderr"):
        lines = captured[name]
        notices = [l.decode(errors="replace").rstrip() for l in lines if b"log lines dropped" in l]
        print("%s: %d lines%s" % (name, len(lines), "".join("; " + n for n in notices)))


main()
