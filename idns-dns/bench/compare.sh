#!/usr/bin/env bash
# Serving-rate comparison: the embedded server against BIND 9, PowerDNS, Knot and gdnsd (each
# when installed), all serving the same small zone, in one run on this machine.
#
#   bash idns-dns/bench/compare.sh            # 20 s per server
#   DURATION=5 bash idns-dns/bench/compare.sh # quicker
#
# Each server is pinned to one core (SERVER_CPU, default 0) and dnsperf to another
# (CLIENT_CPU, default 1), as ../../shared ANCHORS describes: `dnsperf -c 8 -q 100 -T 4`.
# Columns:
#   qps          queries per second answered (dnsperf)
#   lost         queries without an answer
#   busy         the server's CPU time / wall time during the run (its share of its core)
#   qps/core     qps / busy: the rate one fully busy core would serve
#   avg ms       dnsperf's average latency at full load
#   p50/p99 ms   latency percentiles from a second, rate-limited run (RATE q/s, dnsperf -v),
#                since dnsperf 2.10 prints no percentiles for the loaded run
# dnsperf itself tops out near 200k q/s on a small machine: a server at that rate is
# client-bound; compare qps/core.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-20}
RATE=${RATE:-20000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
for tool in dnsperf dig taskset; do
  need "$tool" || { echo "missing $tool (apt-get install dnsperf bind9-dnsutils util-linux)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The zone every server serves.
cat > "$WORK/example.com.zone" <<'EOF'
$TTL 300
@    IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 604800 30
@    IN NS  ns1.example.com.
ns1  IN A   127.0.0.1
www  IN A   192.0.2.1
www  IN AAAA 2001:db8::1
app  IN CNAME www.example.com.
EOF
printf 'www.example.com A\nwww.example.com AAAA\napp.example.com A\nwww.example.com A\n' > "$WORK/queries"

wait_ready() { # port
  for _ in $(seq 1 200); do
    if dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 www.example.com A 2>/dev/null | grep -q 192.0.2.1; then return 0; fi
    sleep 0.05
  done
  return 1
}

cpu_ticks() { # pid: utime + stime of the process and its threads
  awk '{print $14 + $15}' "/proc/$1/stat"
}

ROWS=()
measure() { # name pid port
  local name=$1 pid=$2 port=$3
  if ! wait_ready "$port"; then
    ROWS+=("$(printf '%-22s %s' "$name" 'did not answer; skipped')")
    return
  fi
  # Warm up.
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -c 8 -q 100 -T 4 -l 2 >/dev/null 2>&1 || true
  local hz t0 t1 c0 c1 out qps lost avg busy per_core lat p50 p99
  hz=$(getconf CLK_TCK)
  c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  out=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -c 8 -q 100 -T 4 -l "$DURATION" 2>&1)
  c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  avg=$(awk '/Average Latency \(s\):/ {printf "%.3f", $4 * 1000}' <<<"$out")
  busy=$(awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" 'BEGIN {printf "%.4f", (c1 - c0) / hz / (t1 - t0)}')
  # From the unrounded share: at a share near 0.2, rounding to 0.01 would move this by 2.5 %.
  per_core=$(awk -v q="$qps" -v b="$busy" 'BEGIN {if (b > 0) printf "%.0f", q / b; else print "-"}')
  busy=$(awk -v b="$busy" 'BEGIN {printf "%.2f", b}')
  # Latency percentiles at a fixed rate.
  lat=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -c 8 -T 1 -Q "$RATE" -l 3 -v 2>/dev/null \
    | awk '$1 == ">" {print $NF * 1000}' | sort -n)
  p50=$(awk '{a[NR]=$1} END {if (!NR) {print "-"; exit} i=int(NR*0.50)+1; if (i>NR) i=NR; printf "%.3f", a[i]}' <<<"$lat")
  p99=$(awk '{a[NR]=$1} END {if (!NR) {print "-"; exit} i=int(NR*0.99)+1; if (i>NR) i=NR; printf "%.3f", a[i]}' <<<"$lat")
  ROWS+=("$(printf '%-22s %10.0f %8s %6s %10s %8s %8s %8s' "$name" "$qps" "$lost" "$busy" "$per_core" "$avg" "$p50" "$p99")")
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- the embedded server -------------------------------------------------------------------
echo "building the embedded server (release)..." >&2
cargo build --release -q -p idns-dns --example embedded_serve
port=$(free_port)
taskset -c "$SERVER_CPU" "$TARGET/release/examples/embedded_serve" --listen "127.0.0.1:$port" --threads 1 \
  --zone example.com --record www.example.com=192.0.2.1,2001:db8::1 --record app.example.com=cname:www.example.com \
  --record ns1.example.com=127.0.0.1 >"$WORK/embedded.log" 2>&1 &
pid=$!; PIDS+=("$pid")
echo "measuring idns embedded..." >&2
measure "idns embedded" "$pid" "$port"
stop "$pid"

# --- BIND 9 --------------------------------------------------------------------------------
if need named; then
  port=$(free_port); d="$WORK/bind"; mkdir -p "$d"; cp "$WORK/example.com.zone" "$d/"
  cat > "$d/named.conf" <<EOF
options { directory "$d"; pid-file "$d/named.pid"; session-keyfile "$d/session.key";
  managed-keys-directory "$d"; listen-on port $port { 127.0.0.1; }; listen-on-v6 { none; };
  recursion no; dnssec-validation no; notify no; minimal-responses yes; };
controls { };
zone "example.com" { type primary; file "$d/example.com.zone"; };
EOF
  taskset -c "$SERVER_CPU" named -g -n 1 -U 1 -c "$d/named.conf" >"$d/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  echo "measuring BIND..." >&2
  measure "BIND $(named -v | awk '{print $2}' | cut -d- -f1)" "$pid" "$port"
  stop "$pid"
else
  ROWS+=("$(printf '%-22s %s' BIND 'not installed (bind9)')")
fi

# --- PowerDNS ------------------------------------------------------------------------------
if need pdns_server && need pdnsutil && need sqlite3 && [ -f /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql ]; then
  port=$(free_port); d="$WORK/pdns"; mkdir -p "$d"; cp "$WORK/example.com.zone" "$d/"
  sqlite3 "$d/pdns.sqlite3" < /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql
  cat > "$d/pdns.conf" <<EOF
launch=gsqlite3
gsqlite3-database=$d/pdns.sqlite3
local-address=127.0.0.1
local-port=$port
socket-dir=$d
daemon=no
guardian=no
disable-syslog=yes
security-poll-suffix=
receiver-threads=1
distributor-threads=1
loglevel=3
EOF
  pdnsutil --config-dir="$d" load-zone example.com "$d/example.com.zone" >/dev/null 2>&1
  taskset -c "$SERVER_CPU" pdns_server --config-dir="$d" >"$d/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  echo "measuring PowerDNS..." >&2
  measure "PowerDNS $(pdns_server --version 2>&1 | awk '/Authoritative/ {print $7; exit}')" "$pid" "$port"
  stop "$pid"
else
  ROWS+=("$(printf '%-22s %s' PowerDNS 'not installed (pdns-server, pdns-backend-sqlite3, sqlite3)')")
fi

# --- Knot ----------------------------------------------------------------------------------
if need knotd; then
  port=$(free_port); d="$WORK/knot"; mkdir -p "$d"; cp "$WORK/example.com.zone" "$d/"
  cat > "$d/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$port
    rundir: $d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: $d
log:
  - target: stderr
    any: error
zone:
  - domain: example.com
    storage: $d
    file: example.com.zone
EOF
  taskset -c "$SERVER_CPU" knotd -c "$d/knot.conf" >"$d/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  echo "measuring Knot..." >&2
  measure "Knot $(knotd -V | awk '{print $NF}')" "$pid" "$port"
  stop "$pid"
else
  ROWS+=("$(printf '%-22s %s' Knot 'not installed (knot)')")
fi

# --- gdnsd ---------------------------------------------------------------------------------
if need gdnsd; then
  port=$(free_port); d="$WORK/gdnsd"; mkdir -p "$d/zones" "$d/run" "$d/state"
  cp "$WORK/example.com.zone" "$d/zones/example.com"
  cat > "$d/config" <<EOF
options => { listen => [ 127.0.0.1 ], dns_port => $port, udp_threads => 1, tcp_threads => 1, run_dir => "$d/run", state_dir => "$d/state" }
EOF
  taskset -c "$SERVER_CPU" gdnsd -c "$d" start >"$d/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  echo "measuring gdnsd..." >&2
  measure "gdnsd $(gdnsd -V 2>&1 | awk '/gdnsd version/ {print $3; exit}')" "$pid" "$port"
  stop "$pid"
else
  ROWS+=("$(printf '%-22s %s' gdnsd 'not installed (gdnsd)')")
fi

echo
echo "dnsperf -c 8 -q 100 -T 4 -l $DURATION; server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU; $(nproc) CPUs, $(uname -r)"
printf '%-22s %10s %8s %6s %10s %8s %8s %8s\n' server qps lost busy qps/core 'avg ms' 'p50 ms' 'p99 ms'
printf '%s\n' "${ROWS[@]}"
echo "(p50/p99 from a run at $RATE q/s with dnsperf -v)"
