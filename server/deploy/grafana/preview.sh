#!/usr/bin/env bash
# preview.sh: the screenshot of the Grafana dashboard in docs/operations.md, made without
# Grafana. Two Plait nodes on one redis-server run the load-test harness (fanout) for a few
# minutes while a Prometheus scrapes them; meanwhile one client sends malformed frames (its
# address gets blocked), one floods HTTP requests (rate limit), one opens too many sockets
# (per-address cap), and Redis drops the nodes' subscriptions once (they recover). Then
# preview.py renders every panel of plait.json from Prometheus and headless Chromium takes
# the screenshot.
#
# usage: server/deploy/grafana/preview.sh [OUT.png]   (default docs/img/dashboard.png)
# Needs: redis-server, prometheus, chromium, python3 (apt-get install redis-server prometheus
# chromium python3), and Go to build the node and the harness. Takes about 3 minutes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$root/docs/img/dashboard.png}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
say() { echo "preview.sh: $*" >&2; }

redis_port=16390 n1=18181 n2=18182 prom_port=19390
(cd "$root" && go build -o "$dir/plait" ./server && go build -o "$dir/loadtest" ./loadtest)

redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
for i in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done
for port in $n1 $n2; do
  PLAIT_AUDIT_LOG="$dir/audit-$port.log" "$dir/plait" --addr 127.0.0.1:$port --redis-url redis://127.0.0.1:$redis_port \
    --block-threshold 5 --http-rate-per-ip 20 --http-burst-per-ip 40 --max-conns-per-ip 40 --log-level warn >"$dir/node-$port.log" 2>&1 &
  pids+=($!)
done
cat >"$dir/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: plait
    static_configs: [{targets: ["127.0.0.1:$n1", "127.0.0.1:$n2"]}]
EOF
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
  --web.listen-address=127.0.0.1:$prom_port >"$dir/prometheus.log" 2>&1 &
pids+=($!)
for port in $n1 $n2; do
  for i in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done
start=$(date +%s)
say "load: 30 documents x 6 clients, 1 edit/s each, 150 s, over both nodes"
"$dir/loadtest" fanout -url "ws://127.0.0.1:$n1/ws,ws://127.0.0.1:$n2/ws" -docs 30 -clients 6 -rate 1 \
  -duration 150s -settle 10s -out "$dir/report" >"$dir/loadtest.log" 2>&1 &
load=$!

# faults.py KIND PORT SOURCE: malformed frames, an HTTP flood, or too many sockets, from one
# loopback source address.
cat >"$dir/faults.py" <<'EOF'
import base64, os, socket, sys, time
kind, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    return s
def upgrade(s):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, key)).encode())
    return s.recv(4096)
if kind == "malformed":
    for _ in range(8):
        try:
            s = conn(); upgrade(s)
            payload = b"\xff\x00\x13 not cbor"
            mask = os.urandom(4)
            s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            s.recv(4096); s.close()
        except OSError:
            pass
        time.sleep(0.3)
elif kind == "flood":
    for _ in range(300):
        try:
            s = conn(); s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); s.recv(4096); s.close()
        except OSError:
            pass
elif kind == "sockets":
    held = []
    for _ in range(60):
        try:
            s = conn(); upgrade(s); held.append(s)
        except OSError:
            pass
    time.sleep(5)
EOF
sleep 40; say "malformed frames from 127.0.0.77"; python3 "$dir/faults.py" malformed $n1 127.0.0.77
sleep 15; say "HTTP flood from 127.0.0.78"; python3 "$dir/faults.py" flood $n2 127.0.0.78
sleep 15; say "Redis drops the nodes' pub/sub connections"; redis-cli -p $redis_port client kill type pubsub >/dev/null
sleep 15; say "too many sockets from 127.0.0.79"; python3 "$dir/faults.py" sockets $n1 127.0.0.79
# The window ends while the clients still edit (the run lasts 150 s after its set-up).
while [ $(( $(date +%s) - start )) -lt 140 ]; do sleep 1; done
end=$(date +%s)
wait $load || say "loadtest exited $? (see its log)"
tail -n 5 "$dir/loadtest.log" >&2
python3 "$here/preview.py" "$here/plait.json" "http://127.0.0.1:$prom_port" "$start" "$end" "$dir/dashboard.html" 2
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --hide-scrollbars \
  --window-size=1280,1700 --screenshot="$out" "file://$dir/dashboard.html" 2>/dev/null
say "wrote $out"
