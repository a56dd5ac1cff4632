# Definitions shared by lab/up.sh and lab/down.sh; sourced, never run on its own.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings below are used by the scripts that source this

# State directory of the lab. Everything the lab writes lives below it, apart from the
# network namespaces (/run/netns) and, when the host has none, an empty /root/.ssh.
LAB=${LAB:-/tmp/ganeti-lab}

# Names and addresses. 198.51.100.0/24 is TEST-NET-2: it is configured only on interfaces
# inside the lab's own namespaces, so no packet of the lab can leave the machine.
DOMAIN=ganeti.test
SUBNET=198.51.100
CLUSTER_FQDN=cluster.$DOMAIN
CLUSTER_IP=$SUBNET.10
CLIENT_IP=$SUBNET.2
NS_SWITCH=gl-sw       # holds the bridge every other namespace is plugged into
NS_CLIENT=gl-client   # a bystander host for HTTP clients (bin/gclient, the forwards)
NS_NODE=gl-node       # + N: one namespace per Ganeti node
MAX_NODES=9
MAX_INSTANCES=40

# The RAPI accounts (the tests use the write account; the read one is for people).
RAPI_WRITE_USER=maintd RAPI_WRITE_PASS=maintd-secret
RAPI_READ_USER=viewer RAPI_READ_PASS=viewer-secret
# Loopback ports on the host: RAPI of the cluster, and mond of node N on MOND_PORT_BASE+N.
RAPI_PORT=15080
MOND_PORT_BASE=18150

say() { printf '[lab %3ss] %s\n' "$SECONDS" "$*" >&2; }
fail() { say "error: $*"; exit 1; }

node_ip() { echo "$SUBNET.$((10 + $1))"; }
node_fqdn() { echo "node$1.$DOMAIN"; }
node_dir() { echo "$LAB/nodes/node$1"; }

# The start time of a process (clock ticks since boot), to tell it from a later process
# that happens to get the same PID; empty when there is no such process.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }   # the command name may contain blanks and parentheses
  # shellcheck disable=SC2086 # split on purpose: the fields of /proc/PID/stat
  set -- $stat
  echo "${20}"
}

# Whether a process exists and is not a zombie waiting to be reaped.
proc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The holder of machine directory $1 (nodes/nodeN or client), if it is running.
holder_of() {
  local pid
  pid=$(cat "$1/holder.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && proc_alive "$pid" && echo "$pid"
}

# Run a command on node $1 with a clean environment, as if logged in there.
on_node() {
  local pid
  pid=$(holder_of "$(node_dir "$1")") || fail "node$1 is not running"
  shift
  nsenter --target "$pid" --net --uts --mount -- \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# The lab's network namespaces that exist right now.
lab_namespaces() {
  local f name
  for f in /run/netns/*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    case $name in
      "$NS_SWITCH" | "$NS_CLIENT" | "$NS_NODE"[1-9] | "$NS_NODE"[1-9][0-9]) echo "$name" ;;
    esac
  done
}

# Every process that belongs to the lab: whatever runs inside one of its network
# namespaces (nothing else can have put it there), whatever shares the mount namespace of
# one of its holders, and the host-side forwarders up.sh recorded (with their start time,
# so that a recycled PID is never taken for one).
lab_processes() {
  local ns pid start _ holder dir id
  local -A mnt=()
  for ns in $(lab_namespaces); do
    ip netns pids "$ns" 2>/dev/null || true
  done
  for dir in "$LAB"/nodes/node* "$LAB/client"; do
    holder=$(holder_of "$dir") || continue
    id=$(readlink "/proc/$holder/ns/mnt") && mnt[$id]=1
  done
  if [ ${#mnt[@]} -gt 0 ]; then
    for dir in /proc/[0-9]*; do
      id=$(readlink "$dir/ns/mnt" 2>/dev/null) || continue
      [ -z "${mnt[$id]:-}" ] || echo "${dir#/proc/}"
    done
  fi
  if [ -f "$LAB/run/forwarders" ]; then
    while read -r pid start _; do
      [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] && echo "$pid"
    done < "$LAB/run/forwarders"
  fi
  return 0
}

# Stop every process of the lab (TERM, KILL after 15 s), then delete its namespaces; the
# veth pairs and bridges go with them. Safe to run on a lab that is down or half built.
lab_teardown() {
  local round pid pids waiting ns
  for round in 1 2 3; do
    # Processes may start others while they stop (noded, luxid): look again each round.
    mapfile -t pids < <(lab_processes | sort -un)
    [ ${#pids[@]} -gt 0 ] || break
    [ "$round" = 1 ] && say "stopping ${#pids[@]} lab process(es)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 75); do
      waiting=0
      for pid in "${pids[@]}"; do
        proc_alive "$pid" && { waiting=1; break; }
      done
      [ "$waiting" = 0 ] && break
      sleep 0.2
    done
    for pid in "${pids[@]}"; do
      if proc_alive "$pid"; then
        say "process $pid ignored TERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
  rm -f "$LAB/run/forwarders"
  for ns in $(lab_namespaces); do
    ip netns delete "$ns" || say "could not delete namespace $ns"
  done
}
