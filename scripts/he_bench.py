#!/usr/bin/env python3
"""Time to a CONNECT reply for a name whose first address is black-holed IPv6 and whose
second is a working IPv4 address: socksloop against other SOCKS servers, same run.

Runs inside a private network and mount namespace (scripts/bench-happy-eyeballs.sh starts it
under `unshare --net --mount`): a veth pair and a permanent neighbour entry to a MAC nobody
has make 2001:db8::99 an address whose SYNs vanish (no RST, no ICMP); a hosts file and a
gai.conf bind-mounted over /etc's name `broken6.test` as [2001:db8::99, 198.18.0.1] in that
order. 198.18.0.1 is this namespace's own address, where an echo target listens. Nothing
leaves the namespace.

    python3 scripts/he_bench.py SOCKSLOOP_BIN [RUNS] [OUT.jsonl]
"""
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

SOCKSLOOP = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
OUT = sys.argv[3] if len(sys.argv) > 3 else None
CLIENT_LIMIT = 40.0  # seconds a client waits for a reply before calling it "none"


def sh(*args):
    subprocess.run(args, check=True)


def build_namespace():
    assert os.environ.get("SOCKSLOOP_BENCH_IN_NETNS") == "1", "run scripts/bench-happy-eyeballs.sh"
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "he0", "type", "veth", "peer", "name", "he1")
    sh("ip", "link", "set", "he0", "up")
    sh("ip", "link", "set", "he1", "up")
    sh("ip", "addr", "add", "198.18.0.1/24", "dev", "he0")
    sh("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "he0", "nodad")
    sh("ip", "-6", "neigh", "add", "2001:db8::99", "lladdr", "02:00:00:00:00:99", "dev", "he0", "nud", "permanent")
    tmp = tempfile.mkdtemp()
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n2001:db8::99 broken6.test\n198.18.0.1 broken6.test\n")
    gai = os.path.join(tmp, "gai.conf")
    with open(gai, "w") as f:
        f.write("precedence 2001:db8::99/128 100\nprecedence ::ffff:198.18.0.1/128 60\n"
                "precedence ::/0 40\nprecedence ::ffff:0:0/96 35\n")
    sh("mount", "--bind", hosts, "/etc/hosts")
    sh("mount", "--bind", gai, "/etc/gai.conf")
    return tmp


def echo_target():
    listener = socket.socket()
    listener.bind(("198.18.0.1", 0))
    listener.listen(64)

    def serve():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=lambda c: (c.recv(1), c.close()), args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, limit=5.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def black_hole_packets():
    """Packets sent into the black hole so far (every packet out of he0 goes there). Read from
    /proc/net/dev, which is per network namespace (this namespace's /sys is the host's)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "he0":
                return int(counters.split()[9])  # transmit packets
    raise RuntimeError("he0 not in /proc/net/dev")


def time_to_reply(proxy_port, name, port):
    """Seconds from sending the CONNECT request to its reply, and the reply code."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=CLIENT_LIMIT)
    s.settimeout(CLIENT_LIMIT)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    request = b"\x05\x01\x00\x03" + bytes([len(name)]) + name.encode() + struct.pack(">H", port)
    started = time.monotonic()
    s.sendall(request)
    try:
        head = s.recv(2)
    except socket.timeout:
        head = b""
    took = time.monotonic() - started
    s.close()
    code = head[1] if len(head) == 2 else None
    return took, code


def servers(tmp):
    """(label, argv with {port}) of every server that is installed."""
    found = [("socksloop", [SOCKSLOOP, "--listen", "127.0.0.1:{port}", "--log-level", "warn"])]
    if subprocess.run(["which", "microsocks"], capture_output=True).returncode == 0:
        found.append(("microsocks", ["microsocks", "-i", "127.0.0.1", "-p", "{port}"]))
    if subprocess.run(["which", "danted"], capture_output=True).returncode == 0:
        conf = os.path.join(tmp, "danted.conf")
        found.append(("dante", ["danted", "-f", conf]))
    return found


def dante_conf(tmp, port):
    with open(os.path.join(tmp, "danted.conf"), "w") as f:
        f.write(f"""logoutput: /dev/null
internal: 127.0.0.1 port = {port}
external: 198.18.0.1
external: 2001:db8::1
socksmethod: none
clientmethod: none
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: ::/0 }}
""")


def main():
    tmp = build_namespace()
    target_port = echo_target()
    results = {}
    records = []
    for run in range(RUNS):
        for label, argv in servers(tmp):
            port = free_port()
            if label == "dante":
                dante_conf(tmp, port)
            proc = subprocess.Popen([a.replace("{port}", str(port)) for a in argv],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_listening(port)
                before = black_hole_packets()
                took, code = time_to_reply(port, "broken6.test", target_port)
                lost = black_hole_packets() - before
            finally:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
            results.setdefault(label, []).append((took, code, lost))
            records.append({"label": label, "run": run + 1, "case": "black-holed IPv6 then IPv4",
                            "seconds": round(took, 4), "reply": code, "black_hole_packets": lost})
            print(f"run {run + 1} {label}: {took:.3f} s, reply {code}, {lost} packets into the black hole",
                  file=sys.stderr)
    if OUT:
        with open(OUT, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    print("| server | time to reply, median (runs) | replies | packets into the black hole |")
    print("| --- | ---: | --- | --- |")
    for label, rows in results.items():
        times = [t for t, _, _ in rows]
        codes = ", ".join("none" if c is None else f"{c:02x}" for _, c, _ in rows)
        shown = ", ".join(f"{t:.3f}" for t in times)
        lost = ", ".join(str(n) for _, _, n in rows)
        print(f"| {label} | {statistics.median(times):.3f} s ({shown}) | {codes} | {lost} |")


main()
