#!/usr/bin/env bash
# compare.sh: run one load-test scenario against Plait and against the official automerge-repo
# sync server (loadtest/peers/automerge-repo) and print the ratios Plait/peer.
#
# usage: bash loadtest/peers/compare.sh [options] [-- extra loadtest flags]
#   --scenario NAME     loadtest scenario taking -rate (default fanout)
#   --rates LIST        increasing per-client rates to try, comma separated (default 1,2,4,...,128)
#   --p99-bound-ms MS   a rate is sustainable while latencyMs.p99 <= MS and ok (default 100)
#   --md FILE           also write the result as a Markdown table to FILE
#   --servers LIST      which servers, in order (default plait,automerge-repo)
#   --restart           fresh server (and data dir) for every rate, not one per server
#   --cooldown S        pause between steps (default 2)
#   --step-timeout S    kill a loadtest run after S seconds (default 900)
# e.g. bash loadtest/peers/compare.sh --rates 1,2,4,8 -- -docs 10 -clients 20 -duration 20s
#
# For each server: start it on a free loopback port with a fresh temp data dir, then run
# `loadtest <scenario> -url ws://127.0.0.1:PORT/ws -out TMP/<server>-<rate> -rate R [extra]`
# for each rate until a run fails (p99 > bound, ok false, or the server died), stop it.
# The harness is built once (go build ./loadtest); LOADTEST="cmd args" overrides it.
# Reports stay in the printed temp dir; servers and data dirs are removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEER_DIR=$ROOT/loadtest/peers/automerge-repo

scenario=fanout rates=1,2,4,8,16,32,64,128 bound=100 md= servers=plait,automerge-repo
restart=0 cooldown=2 step_timeout=900
extra=()

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
need() { [[ $# -ge 2 && -n $2 ]] || { echo "compare.sh: $1 needs a value" >&2; usage; }; }
while (($#)); do
  case $1 in
    --scenario) need "$@"; scenario=$2; shift 2 ;;
    --rates) need "$@"; rates=$2; shift 2 ;;
    --p99-bound-ms) need "$@"; bound=$2; shift 2 ;;
    --md) need "$@"; md=$2; shift 2 ;;
    --servers) need "$@"; servers=$2; shift 2 ;;
    --restart) restart=1; shift ;;
    --cooldown) need "$@"; cooldown=$2; shift 2 ;;
    --step-timeout) need "$@"; step_timeout=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown argument: $1" >&2; usage ;;
  esac
done
num='^[0-9]+([.][0-9]+)?$'
IFS=, read -r -a rate_list <<<"$rates"
IFS=, read -r -a server_list <<<"$servers"
((${#rate_list[@]} > 0)) || usage
for r in "${rate_list[@]}"; do [[ $r =~ $num ]] || { echo "compare.sh: bad rate: $r" >&2; exit 2; }; done
for v in "$bound" "$cooldown" "$step_timeout"; do [[ $v =~ $num ]] || { echo "compare.sh: not a number: $v" >&2; exit 2; }; done
for s in "${server_list[@]}"; do
  [[ $s == plait || $s == automerge-repo ]] || { echo "compare.sh: unknown server: $s" >&2; exit 2; }
done
command -v node >/dev/null || { echo "compare.sh: node is required" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/plait-compare.XXXXXX")
SERVER_PID= LT_PID= DATA_DIR= PORT=

stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done # <= 30 s
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
  if [[ -n $DATA_DIR ]]; then rm -rf "$DATA_DIR"; DATA_DIR=; fi
}
cleanup() {
  if [[ -n $LT_PID ]]; then kill -TERM "$LT_PID" 2>/dev/null || true; wait "$LT_PID" 2>/dev/null || true; fi
  stop_server
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites: peer packages, Plait binary, the harness ---
if [[ " ${server_list[*]} " == *" automerge-repo "* && ! -f $PEER_DIR/node_modules/.package-lock.json ]]; then
  echo "compare.sh: npm ci in $PEER_DIR" >&2
  (cd "$PEER_DIR" && npm ci --no-audit --no-fund >&2)
fi
if [[ " ${server_list[*]} " == *" plait "* && ! -x $ROOT/bin/plait ]]; then
  echo "compare.sh: make build" >&2
  make -C "$ROOT" build >&2
fi
if [[ -n ${LOADTEST:-} ]]; then
  read -r -a LT <<<"$LOADTEST"
else
  echo "compare.sh: go build ./loadtest" >&2
  (cd "$ROOT" && go build -o "$TMP/loadtest" ./loadtest)
  LT=("$TMP/loadtest")
fi

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
probe() { node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$1"; }

start_server() { # name; sets SERVER_PID, PORT, DATA_DIR
  local name=$1 log=$TMP/$1.log
  PORT=$(free_port)
  DATA_DIR=$(mktemp -d "$TMP/data-$name.XXXXXX")
  echo "--- start $name on 127.0.0.1:$PORT" >>"$log"
  case $name in
    plait) "$ROOT/bin/plait" --addr "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >>"$log" 2>&1 </dev/null & ;;
    automerge-repo) (cd "$PEER_DIR" && exec node server.mjs "$PORT" "$DATA_DIR") >>"$log" 2>&1 </dev/null & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1 60); do # <= ~30 s
    probe "http://127.0.0.1:$PORT/metrics" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.25
  done
  echo "compare.sh: $name did not come up on 127.0.0.1:$PORT; end of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

find_report() { # prefix -> path of its JSON report, or nothing
  local p=$1 f
  for f in "$p.json" "$p"; do [[ -f $f ]] && { echo "$f"; return; }; done
  for f in "$p"*.json; do [[ -f $f ]] && { echo "$f"; return; }; done
  return 0
}

# verdict REPORT EXIT_CODE -> "PASS|FAIL<TAB>summary"
verdict() {
  node -e '
    const [f, bound, rc] = process.argv.slice(1)
    let r
    try { r = JSON.parse(require("fs").readFileSync(f, "utf8")) }
    catch (e) { console.log(`FAIL\tunreadable report ${f}: ${e.message}`); process.exit() }
    const n = (x, d = 1) => typeof x === "number" ? x.toFixed(d) : "?"
    const p99 = r.latencyMs?.p99, why = []
    if (r.ok !== true) why.push(`ok=${r.ok} (errors ${r.errors?.count ?? "?"}, notConverged ${JSON.stringify(r.notConverged ?? "?")})`)
    if (typeof p99 !== "number" || !(r.latencyMs?.count > 0)) why.push("no latency samples")
    else if (p99 > Number(bound)) why.push(`p99 ${n(p99)} ms > ${bound} ms`)
    if (rc !== "0" && r.ok === true) why.push(`exit ${rc}`)
    const cpu = x => typeof x === "number" ? x.toFixed(3) : "n/a"
    const s = `${n(r.edits?.perSec)} edits/s, p50 ${n(r.latencyMs?.p50)} ms, p99 ${n(p99)} ms, ` +
      `RSS peak ${n((r.server?.rssPeakBytes ?? NaN) / 2 ** 20)} MiB, ` +
      `CPU ${cpu(r.server?.cpuMsPerEdit)} ms/edit ${cpu(r.server?.cpuMsPerDelivery)} ms/delivery` +
      (r.server?.relayMs ? `, node relay p99 ${n(r.server.relayMs.p99)} ms` : "") +
      (r.server?.sendMs ? `, node send p99 ${n(r.server.sendMs.p99)} ms` : "")
    console.log(why.length ? `FAIL\t${s}: ${why.join("; ")}` : `PASS\t${s}`)
  ' "$1" "$bound" "$2"
}

STEPS=$TMP/steps.tsv
: >"$STEPS"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS"; } # server rate PASS|FAIL report reason

# --- the step-up search, one server at a time ---
for name in "${server_list[@]}"; do
  echo "== $name" >&2
  if ((!restart)) && ! start_server "$name"; then record "$name" - FAIL "" "server did not start"; stop_server; continue; fi
  for rate in "${rate_list[@]}"; do
    if ((restart)) && ! start_server "$name"; then record "$name" "$rate" FAIL "" "server did not start"; break; fi
    out=$TMP/$name-$rate rc=0
    timeout --kill-after=10 "$step_timeout" "${LT[@]}" "$scenario" -url "ws://127.0.0.1:$PORT/ws" \
      -out "$out" -rate "$rate" ${extra[@]+"${extra[@]}"} >"$out.stdout" 2>"$out.stderr" </dev/null &
    LT_PID=$!
    wait "$LT_PID" || rc=$?
    LT_PID=
    if ((rc == 2)); then
      echo "compare.sh: loadtest usage error:" >&2; tail -n 20 "$out.stderr" >&2; exit 2
    fi
    report=$(find_report "$out")
    if [[ -z $report ]]; then
      v=$'FAIL\t'"no report (exit $rc)"
      if ((rc == 124)); then v+=" timed out after ${step_timeout}s"; fi
      tail -n 5 "$out.stderr" >&2
    else
      v=$(verdict "$report" "$rc")
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      v=$'FAIL\t'"${v#*$'\t'}; server exited (see $TMP/$name.log)"
    fi
    echo "  rate $rate/client: ${v#*$'\t'} -> ${v%%$'\t'*}" >&2
    record "$name" "$rate" "${v%%$'\t'*}" "$report" "${v#*$'\t'}"
    if ((restart)); then stop_server; fi
    [[ ${v%%$'\t'*} == PASS ]] || break
    sleep "$cooldown"
  done
  stop_server
done

# --- the table, the ratios, the Markdown ---
node -e '
  const fs = require("fs")
  const [steps, bound, scenario, rates, md, commit, extra] = process.argv.slice(1)
  const rows = fs.readFileSync(steps, "utf8").split("\n").filter(Boolean).map(l => {
    const [server, rate, verdict, report, reason] = l.split("\t")
    return { server, rate, verdict, report, reason }
  })
  const servers = [...new Set(rows.map(r => r.server))]
  const res = servers.map(server => {
    const mine = rows.filter(r => r.server === server)
    const best = mine.filter(r => r.verdict === "PASS").pop()
    const fail = mine.find(r => r.verdict === "FAIL")
    const rep = best ? JSON.parse(fs.readFileSync(best.report, "utf8")) : null
    return {
      server, rate: best?.rate, perSec: rep?.edits?.perSec, p50: rep?.latencyMs?.p50,
      p99: rep?.latencyMs?.p99, rss: rep?.server?.rssPeakBytes, clients: rep?.clients, docs: rep?.docs,
      cpuEdit: rep?.server?.cpuMsPerEdit, cpuDelivery: rep?.server?.cpuMsPerDelivery,
      stop: fail ? `failed at ${fail.rate}/s: ${fail.reason}` : "never failed: raise --rates",
      saturated: !!fail,
    }
  })
  const f = (x, d = 1) => typeof x === "number" && isFinite(x) ? x.toFixed(d) : "-"
  // server CPU over the measured phase; n/a: the server does not report it
  const cpu = (r, x) => r.rate === undefined ? "-" : typeof x === "number" ? x.toFixed(3) : "n/a"
  const head = ["server", "rate/client", "edits/s", "p50 ms", "p99 ms", "peak RSS MiB", "CPU ms/edit", "CPU ms/delivery", "clients", "docs"]
  const body = res.map(r => [r.server, r.rate ?? "none", f(r.perSec), f(r.p50), f(r.p99),
    f(r.rss / 2 ** 20), cpu(r, r.cpuEdit), cpu(r, r.cpuDelivery), r.clients ?? "-", r.docs ?? "-"].map(String))
  const P = res.find(r => r.server === "plait"), Q = res.find(r => r.server === "automerge-repo")
  const load = rep => rep && { perSec: rep.edits?.perSec, p50: rep.latencyMs?.p50, p99: rep.latencyMs?.p99, rss: rep.server?.rssPeakBytes,
    cpuEdit: rep.server?.cpuMsPerEdit, cpuDelivery: rep.server?.cpuMsPerDelivery }
  let ratios = null, eqRate = null
  if (P && Q) {
    // equal load: the highest rate both servers ran with a report, sustainable or not
    const ran = s => new Map(rows.filter(r => r.server === s && r.report).map(r => [r.rate, r.report]))
    const rp = ran("plait"), rq = ran("automerge-repo")
    eqRate = [...rp.keys()].filter(k => rq.has(k)).pop() ?? null
    const read = f => JSON.parse(fs.readFileSync(f, "utf8"))
    const EP = eqRate && load(read(rp.get(eqRate))), EQ = eqRate && load(read(rq.get(eqRate)))
    const q = (a, b) => typeof a === "number" && typeof b === "number" && b > 0 ? f(a / b, 2) + "x" : "n/a"
    const note = !P.rate || !Q.rate ? ` (${[!P.rate && "plait", !Q.rate && "peer"].filter(Boolean).join(" and ")} ` +
      "not sustainable at the lowest rate)" : [!P.saturated && " (plait never failed: at least)", !Q.saturated && " (peer never failed)"].filter(Boolean).join("")
    ratios = [["edits/s", q(P.perSec, Q.perSec) + note, EP ? q(EP.perSec, EQ.perSec) : "n/a", "higher is better"],
      ["p50", q(P.p50, Q.p50), EP ? q(EP.p50, EQ.p50) : "n/a", "lower is better"],
      ["p99", q(P.p99, Q.p99), EP ? q(EP.p99, EQ.p99) : "n/a", "lower is better"],
      ["peak RSS", q(P.rss, Q.rss), EP ? q(EP.rss, EQ.rss) : "n/a", "lower is better"],
      ["CPU per edit", q(P.cpuEdit, Q.cpuEdit), EP ? q(EP.cpuEdit, EQ.cpuEdit) : "n/a", "lower is better"],
      ["CPU per delivery", q(P.cpuDelivery, Q.cpuDelivery), EP ? q(EP.cpuDelivery, EQ.cpuDelivery) : "n/a", "lower is better"]]
  }
  const rhead = ["Plait / automerge-repo", "at max sustainable", `at equal load (${eqRate ?? "-"}/client)`, ""]
  const w = head.map((h, i) => Math.max(h.length, ...body.map(b => b[i].length)))
  const line = c => c.map((x, i) => x.padEnd(w[i])).join("  ")
  const title = `scenario ${scenario}, rates ${rates}, sustainable = ok and p99 <= ${bound} ms` +
    (extra ? `, flags: ${extra}` : "")
  const out = [title, "", line(head), ...body.map(line), ""]
  for (const r of res) out.push(`${r.server}: ${r.stop}`)
  if (ratios) {
    const rw = rhead.map((h, i) => Math.max(h.length, ...ratios.map(r => r[i].length)))
    out.push("", ...[rhead, ...ratios].map(c => c.map((x, i) => x.padEnd(rw[i])).join("  ").trimEnd()))
  }
  console.log(out.join("\n"))
  if (md) {
    const row = c => `| ${c.join(" | ")} |`
    const m = [`## Plait vs automerge-repo sync server: ${scenario}`, "",
      `Plait ${commit}, Node ${process.version}; ${title}.`, "",
      row(head), row(head.map(() => "---")), ...body.map(row), ""]
    for (const r of res) m.push(`- ${r.server}: ${r.stop}`)
    if (ratios) m.push("", row(rhead), row(rhead.map(() => "---")), ...ratios.map(row))
    fs.writeFileSync(md, m.join("\n") + "\n")
    console.log(`\nMarkdown: ${md}`)
  }
' "$STEPS" "$bound" "$scenario" "$rates" "$md" "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" "${extra[*]-}"
echo "reports: $TMP" >&2
