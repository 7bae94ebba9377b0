#!/usr/bin/env bash
# cluster.sh: a local Plait cluster on loopback, for development and demos.
#
#   redis-server (append-only file on)       127.0.0.1:6379
#   N Plait nodes (bin/plait, --redis-url)   127.0.0.1:8081 .. 8080+N
#   haproxy in front of the nodes            127.0.0.1:8080  (clients: ws://127.0.0.1:8080/ws)
#
# usage: server/deploy/cluster.sh [--nodes N] [--base-port P] [--dir D]
#   --nodes N      number of Plait nodes (default 3; env CLUSTER_NODES)
#   --base-port P  port of the first node, the others follow (default 8081; env CLUSTER_BASE_PORT)
#   --dir D        Redis data, haproxy.cfg and logs/ go here; reusing a directory keeps the
#                  documents (default: a new temporary directory; env CLUSTER_DIR)
# haproxy connects to the nodes from CLUSTER_PROXY_SOURCE (default 127.0.0.2 on Linux, where all of
# 127.0.0.0/8 is loopback; 127.0.0.1 elsewhere) with a PROXY protocol v2 header naming the client,
# and the nodes trust that address alone (--trusted-proxies): limits, blocking and the audit log
# see each client's address, not haproxy's.
# Other environment: CLUSTER_LB_PORT (haproxy, default 8080), CLUSTER_REDIS_PORT (default 6379),
# CLUSTER_PLAIT_BIN (default bin/plait, built with `make build` if missing or too old to know
# --redis-url; rebuild it yourself after changing the code). PLAIT_* variables (e.g.
# PLAIT_LOG_LEVEL=debug) reach every node; --addr and --redis-url are set by the script.
#
# It runs in the foreground until Ctrl-C or SIGTERM, then stops the nodes (they drain), haproxy,
# and Redis last, so the nodes can finish their writes. A node that dies meanwhile (e.g. you kill
# it to watch the fail-over) is reported and the rest keep running; if Redis or haproxy dies,
# everything stops.
#
# Needs redis-server and haproxy: apt-get install redis-server haproxy
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

nodes=${CLUSTER_NODES:-3}
base_port=${CLUSTER_BASE_PORT:-8081}
lb_port=${CLUSTER_LB_PORT:-8080}
redis_port=${CLUSTER_REDIS_PORT:-6379}
dir=${CLUSTER_DIR:-}
bin=${CLUSTER_PLAIT_BIN:-$root/bin/plait}
default_source=127.0.0.1
[ "$(uname -s)" != Linux ] || default_source=127.0.0.2
proxy_source=${CLUSTER_PROXY_SOURCE:-$default_source}

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do # each pass consumes at least one argument
  case $1 in
    --nodes) need_arg "$1" $#; nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    --base-port) need_arg "$1" $#; base_port=$2; shift 2 ;;
    --base-port=*) base_port=${1#*=}; shift ;;
    --dir) need_arg "$1" $#; dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

is_int() { [[ $1 =~ ^[0-9]+$ ]] && [ "${#1}" -le 5 ]; }
is_int "$nodes" && [ "$nodes" -ge 1 ] && [ "$nodes" -le 32 ] || die "--nodes must be 1..32, not '$nodes'"
for p in "$base_port" "$lb_port" "$redis_port"; do
  is_int "$p" && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "invalid port '$p'"
done
last_port=$((base_port + nodes - 1))
[ "$last_port" -le 65535 ] || die "node ports $base_port..$last_port exceed 65535"
for p in "$lb_port" "$redis_port"; do
  if [ "$p" -ge "$base_port" ] && [ "$p" -le "$last_port" ]; then
    die "port $p (haproxy or Redis) is inside the node ports $base_port..$last_port: choose another --base-port"
  fi
done
[ "$lb_port" != "$redis_port" ] || die "haproxy and Redis cannot both use port $lb_port"
[[ $proxy_source =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "CLUSTER_PROXY_SOURCE must be a 127.x.y.z address, not '$proxy_source'"

missing=()
for b in redis-server haproxy; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "${missing[*]} not found on PATH; install with: apt-get install redis-server haproxy (or run \`make deps\`)"
fi

# A bin/plait older than the Redis backend or trusted proxies would refuse their flags: rebuild it too.
knows_flags() { "$bin" --help 2>&1 | grep -q -- '-trusted-proxies'; }
if [ ! -x "$bin" ] || ! knows_flags; then
  if [ -n "${CLUSTER_PLAIT_BIN:-}" ]; then die "CLUSTER_PLAIT_BIN=$bin is not a plait binary with --redis-url and --trusted-proxies"; fi
  command -v make >/dev/null 2>&1 && command -v go >/dev/null 2>&1 || die "$bin is missing or too old and make/go are not installed to build it"
  say "$bin is missing or predates --redis-url or --trusted-proxies: running make build"
  (cd "$root" && make build) || die "make build failed"
  knows_flags || die "$bin still has no --trusted-proxies after make build"
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$redis_port" "$lb_port" $(seq "$base_port" "$last_port"); do
  if port_busy "$p"; then die "port $p on 127.0.0.1 is already in use (another cluster.sh or redis-server?)"; fi
done

if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/plait-cluster.XXXXXX")
else
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
fi
logs=$dir/logs
mkdir -p "$dir/redis" "$logs"

# --- process bookkeeping and shutdown --------------------------------------------------------

names=() pids=() node_pids=() haproxy_pid="" redis_pid="" launched="" sleep_pid=""
alive() { kill -0 "$1" 2>/dev/null; }

# stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL what is left.
stop_pids() {
  local secs=$1 p i any
  shift
  [ $# -gt 0 ] || return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < secs * 10; i++)); do
    any=0
    for p in "$@"; do alive "$p" && any=1; done
    [ "$any" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do
    if alive "$p"; then
      say "pid $p did not stop within ${secs}s: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
}

stopped=0
cleanup() {
  [ "$stopped" = 0 ] || return 0
  stopped=1
  trap '' INT TERM
  [ -z "$sleep_pid" ] || kill "$sleep_pid" 2>/dev/null || true
  if [ ${#pids[@]} -gt 0 ]; then say "stopping (logs in $logs)"; fi
  # Nodes first (they drain: /readyz turns 503 and they finish their Redis writes), then
  # haproxy, then Redis, which writes its append-only file on SIGTERM.
  stop_pids 30 "${node_pids[@]}"
  [ -z "$haproxy_pid" ] || stop_pids 5 "$haproxy_pid"
  [ -z "$redis_pid" ] || stop_pids 15 "$redis_pid"
  if [ ${#pids[@]} -gt 0 ]; then say "stopped"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# launch NAME LOG CMD...: start CMD in the background in its own process group (set -m), so
# that Ctrl-C in the terminal reaches only this script, which then stops everything in order.
launch() {
  local name=$1 log=$2
  shift 2
  set -m
  "$@" >"$log" 2>&1 </dev/null &
  launched=$!
  set +m
  names+=("$name")
  pids+=("$launched")
}

tail_log() { say "last lines of $1:"; tail -n 20 "$1" >&2 || true; }

# wait_until SECONDS PID LOG WHAT CMD...: run CMD every 0.1s until it succeeds; fail if PID dies
# or SECONDS pass.
wait_until() {
  local secs=$1 pid=$2 log=$3 what=$4 i
  shift 4
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! alive "$pid"; then tail_log "$log"; die "$what exited at start"; fi
    sleep 0.1
  done
  tail_log "$log"
  die "$what not ready within ${secs}s"
}

# --- Redis ----------------------------------------------------------------------------------

redis_ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
  else
    port_busy "$redis_port"
  fi
}
# appendfsync everysec: at most about a second of writes is lost if the machine (not just the
# process) crashes; use always for none, at a cost in write latency. See docker-compose.yml.
launch redis "$logs/redis.log" redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" \
  --appendonly yes --appendfsync everysec --save "" --protected-mode yes --logfile ""
redis_pid=$launched
wait_until 10 "$redis_pid" "$logs/redis.log" "redis-server" redis_ping

# --- Plait nodes ----------------------------------------------------------------------------

for ((i = 1; i <= nodes; i++)); do
  port=$((base_port + i - 1))
  launch "node$i" "$logs/node$i.log" "$bin" --addr "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$redis_port" \
    --trusted-proxies "$proxy_source"
  node_pids+=("$launched")
done
for ((i = 1; i <= nodes; i++)); do
  port=$((base_port + i - 1))
  wait_until 20 "${node_pids[i - 1]}" "$logs/node$i.log" "node$i" "$bin" probe "http://127.0.0.1:$port/readyz"
done

# --- haproxy --------------------------------------------------------------------------------

cfg=$dir/haproxy.cfg
{
  cat <<EOF
# Generated by server/deploy/cluster.sh; see server/deploy/haproxy.cfg for the annotated version.
global
    log stderr format raw local0 info
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout tunnel 1h
    timeout client-fin 5s

frontend plait
    bind 127.0.0.1:$lb_port
    stats enable
    stats uri /haproxy-stats
    stats refresh 2s
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 source $proxy_source send-proxy-v2
EOF
  for ((i = 1; i <= nodes; i++)); do
    echo "    server node$i 127.0.0.1:$((base_port + i - 1)) check"
  done
} >"$cfg"
haproxy -c -q -f "$cfg" || die "haproxy rejects $cfg"
launch haproxy "$logs/haproxy.log" haproxy -f "$cfg" -db
haproxy_pid=$launched
wait_until 10 "$haproxy_pid" "$logs/haproxy.log" "haproxy" "$bin" probe "http://127.0.0.1:$lb_port/readyz"

# --- running --------------------------------------------------------------------------------

cat <<EOF
Plait cluster is up ($nodes nodes):
  clients     ws://127.0.0.1:$lb_port/ws        (haproxy; http://127.0.0.1:$lb_port/readyz)
  haproxy     http://127.0.0.1:$lb_port/haproxy-stats
EOF
for ((i = 1; i <= nodes; i++)); do
  port=$((base_port + i - 1))
  printf '  node%-7s ws://127.0.0.1:%s/ws        (http://127.0.0.1:%s/metrics, pid %s)\n' "$i" "$port" "$port" "${node_pids[i - 1]}"
done
cat <<EOF
  redis       redis://127.0.0.1:$redis_port      (data in $dir/redis)
  logs        $logs
Ctrl-C (or SIGTERM to pid $$) stops everything.
EOF

# Supervise until a signal arrives (the traps exit) or Redis/haproxy dies. The sleep runs in
# the background so that a signal is handled at once.
declare -A reported=()
while true; do
  for idx in "${!pids[@]}"; do
    pid=${pids[idx]}
    alive "$pid" && continue
    case ${names[idx]} in
      node*)
        if [ -z "${reported[$pid]:-}" ]; then
          reported[$pid]=1
          say "${names[idx]} (pid $pid) exited; haproxy routes around it (log: $logs/${names[idx]}.log)"
        fi
        ;;
      *)
        tail_log "$logs/${names[idx]}.log"
        die "${names[idx]} (pid $pid) exited: stopping the cluster"
        ;;
    esac
  done
  sleep 1 &
  sleep_pid=$!
  wait "$sleep_pid" || true
done
