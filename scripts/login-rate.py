#!/usr/bin/env python3
"""Logins per second with argon2id users: cold (each login verifies a hash on the verifier
threads) and remembered (the verified-login cache answers on the loop), and the proxy's CPU
time per cold login.

    python3 scripts/login-rate.py [BINARY] [--users N] [--rounds R] [--clients C] [--verifier-threads T]

BINARY defaults to target/release/socksloop. The script hashes N passwords with the binary's
own `hash-password`, writes a config file of N `[[users]]` with them, starts the proxy on a
free loopback port and logs each user in once (cold: N verifications), then R more times
(remembered), from C client threads. A login is: connect, greet (username/password), RFC 1929,
read the status, close; no request follows. Python's own cost bounds the remembered rate, so
read that one as "at least". Loopback only; the proxy is stopped at the end.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """(user, system) CPU seconds of process `pid` so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def per_login_ms(before, after, n):
    user, system = ((a - b) * 1000 / n for a, b in zip(after, before))
    return f"{user + system:.3f} ms per login: {user:.3f} user + {system:.3f} system"


def login(addr, user, password):
    with socket.create_connection(addr, timeout=30) as s:
        s.sendall(b"\x05\x01\x02")
        assert s.recv(2) == b"\x05\x02", "username/password not chosen"
        u, p = user.encode(), password.encode()
        s.sendall(bytes([1, len(u)]) + u + bytes([len(p)]) + p)
        answer = b""
        while len(answer) < 2:
            chunk = s.recv(2 - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer == b"\x01\x00"


def run_logins(addr, jobs, clients):
    """Log every (user, password) of jobs in, from `clients` threads; (seconds, failures)."""
    lock = threading.Lock()
    queue = list(jobs)
    failures = [0]

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                user, password = queue.pop()
            if not login(addr, user, password):
                with lock:
                    failures[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start, failures[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="target/release/socksloop")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--verifier-threads", type=int, default=2)
    args = ap.parse_args()

    users = [(f"user{i}", f"password-{i}-{os.urandom(4).hex()}") for i in range(args.users)]
    hashes = []
    for _, password in users:
        out = subprocess.run([args.binary, "hash-password"], input=(password + "\n").encode(),
                             capture_output=True, check=True)
        hashes.append(out.stdout.decode().strip())
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"verifier-threads = {args.verifier_threads}\nlog-level = \"warn\"\n")
        for (name, _), phc in zip(users, hashes):
            f.write(f'\n[[users]]\nname = "{name}"\npassword-hash = "{phc}"\n')
        config = f.name
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proxy = subprocess.Popen([args.binary, "--config", config, "--listen", f"127.0.0.1:{port}"],
                             stderr=subprocess.DEVNULL)
    try:
        addr = ("127.0.0.1", port)
        for _ in range(100):
            try:
                socket.create_connection(addr, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        cpu0 = cpu_seconds(proxy.pid)
        cold_s, cold_fail = run_logins(addr, users, args.clients)
        cpu1 = cpu_seconds(proxy.pid)
        warm_s, warm_fail = run_logins(addr, users * args.rounds, args.clients)
        cpu2 = cpu_seconds(proxy.pid)
        n, m = len(users), len(users) * args.rounds
        print(f"users {n}, clients {args.clients}, verifier threads {args.verifier_threads}, cores {os.cpu_count()}")
        print(f"cold:       {n / cold_s:8.1f} logins/s  ({n} logins, {cold_fail} failed; "
              f"proxy CPU {per_login_ms(cpu0, cpu1, n)})")
        print(f"remembered: {m / warm_s:8.1f} logins/s  ({m} logins, {warm_fail} failed; "
              f"proxy CPU {per_login_ms(cpu1, cpu2, m)})")
        if cold_fail or warm_fail:
            sys.exit(1)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        os.unlink(config)


if __name__ == "__main__":
    main()
