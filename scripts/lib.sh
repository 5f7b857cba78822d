# Helpers shared by the scripts that start servers on loopback (source it, don't run it).

# A port that was free a moment ago on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait up to 5 s for something to accept on 127.0.0.1:$1.
wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# start PORT COMMAND...: start a server (output discarded) under "${SERVER_CPU[@]}" (the
# caller's pinning, e.g. taskset -c 0); its PID in $pid.
# It runs in a session of its own (setsid execs it, so the PID stays the server's), so that
# stop can reach every process it forks: Dante's parent process was seen to outlive SIGTERM.
# With RT=1 (the caller's setting) every thread of the server is switched to SCHED_FIFO once
# it listens (threads and processes it creates later inherit that). Not at exec: hev-socks5-server, started under
# SCHED_FIFO on one core, never got as far as listening here (not investigated further; a
# real-time thread that busy-waits for another on the same core would do exactly that).
start() {
  local port=$1
  shift
  setsid "${SERVER_CPU[@]}" "$@" >/dev/null 2>&1 &
  pid=$!
  wait_for_port "$port"
  if [ "$RT" = 1 ]; then chrt -f -a -p 10 "$pid" >/dev/null; fi
}

# stop: SIGTERM to the server's process group, then SIGKILL to whatever is left after 3 s.
stop() {
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
