#!/bin/bash
# Bring up maintd's live lab: a real Ganeti 3.0 cluster of NODES nodes (fake hypervisor,
# diskless instances) in network namespaces of this machine. See lab/README.md.
#
#   lab/up.sh [-n NODES] [-i INSTANCES] [--fresh] [--no-forward]
#
#   -n NODES       nodes, 1 to 9 (default 3); node1 is the master
#   -i INSTANCES   diskless instances, 0 to 40 (default 4)
#   --fresh        build it anew even if a lab of that shape is up
#   --no-forward   no loopback ports on the host for RAPI and mond
#
# The state directory is $LAB (default /tmp/ganeti-lab). A lab of the asked shape that is
# up and answering is left as it is; anything else there is torn down and rebuilt.
# Needs root and Debian 12 (bookworm); installs the packages it needs with apt-get.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$HERE/lib/common.sh"

nodes=3
instances=4
fresh=0
forward=1
usage() { sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    -n) nodes=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    -i) instances=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --fresh) fresh=1; shift ;;
    --no-forward) forward=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "up.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $nodes in '' | *[!0-9]*) fail "-n wants a number, not '$nodes'" ;; esac
case $instances in '' | *[!0-9]*) fail "-i wants a number, not '$instances'" ;; esac
if [ "$nodes" -lt 1 ] || [ "$nodes" -gt "$MAX_NODES" ]; then fail "-n: 1 to $MAX_NODES nodes"; fi
[ "$instances" -le "$MAX_INSTANCES" ] || fail "-i: at most $MAX_INSTANCES instances"
[ "$(id -u)" = 0 ] || fail "run me as root (namespaces, mounts, Ganeti's daemons)"
SHAPE="nodes=$nodes instances=$instances forward=$forward"

# $LAB as an absolute path, and not somewhere a node's mounts would hide it from the node.
mkdir -p "$LAB"
LAB=$(cd "$LAB" && pwd -P)
case $LAB/ in
  / | /run/* | /var/run/* | /srv/* | /etc/* | /var/lib/ganeti/* | /var/log/ganeti/* | /root/.ssh/*)
    fail "LAB=$LAB: the nodes mount over that place; choose another (default /tmp/ganeti-lab)" ;;
esac
export LAB

# ------------------------------------------------------------------------------------------
# Packages

install_packages() {
  local pkg missing=()
  for pkg in ganeti ganeti-htools-3.0 openssh-server openssh-client socat curl iproute2 procps; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  command -v apt-get > /dev/null || fail "missing packages and no apt-get: ${missing[*]}"
  say "installing ${missing[*]}"
  # Debian's maintainer scripts would start sshd and Ganeti's daemons on the host itself;
  # a policy-rc.d that refuses every start keeps them off while we install.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\n# maintd lab: no services started while packages install\nexit 101\n' > $policy
    chmod 0755 $policy
    ours=1
  fi
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${missing[@]}"; } > "$LAB/apt.log" 2>&1 || rc=$?
  [ $ours = 0 ] || rm -f $policy
  [ $rc = 0 ] || { tail -n 20 "$LAB/apt.log" >&2; fail "package installation failed ($LAB/apt.log)"; }
}

# ------------------------------------------------------------------------------------------
# Is the asked lab up already?

lab_answers() {
  [ "$(cat "$LAB/.up" 2>/dev/null)" = "$SHAPE" ] || return 1
  local n pid start _
  for n in $(seq 1 "$nodes"); do
    holder_of "$(node_dir "$n")" > /dev/null || return 1
  done
  holder_of "$LAB/client" > /dev/null || return 1
  if [ $forward = 1 ]; then
    [ -s "$LAB/run/forwarders" ] || return 1
    while read -r pid start _; do
      [ "$(proc_start "$pid")" = "$start" ] || return 1
    done < "$LAB/run/forwarders"
  fi
  on_node 1 timeout 30 gnt-cluster getmaster > /dev/null 2>&1
}

# ------------------------------------------------------------------------------------------
# Files: what every machine shares, then each node's own directories

write_shared_files() {
  local n i
  mkdir -p "$LAB/bin" "$LAB/run" "$LAB/ssh" "$LAB/nodes" "$LAB/client"
  {
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$CLUSTER_IP $CLUSTER_FQDN cluster"
    echo "$CLIENT_IP client.$DOMAIN client"
    for n in $(seq 1 "$MAX_NODES"); do echo "$(node_ip "$n") $(node_fqdn "$n") node$n"; done
    for i in $(seq 1 "$MAX_INSTANCES"); do echo "$SUBNET.$((100 + i)) inst$i.$DOMAIN inst$i"; done
  } > "$LAB/hosts"

  # root's key pair, the same on every node and authorized on every node: what an
  # administrator sets up before `gnt-node add` on a cluster without Ganeti-managed keys.
  ssh-keygen -q -t ed25519 -N '' -C "root@maintd-lab" -f "$LAB/ssh/id_ed25519"

  # /etc/ssh of every node: host keys made for the lab and shared by all nodes, so the
  # known_hosts that `gnt-cluster init` writes from its own host key fits every node.
  local etc=$LAB/ssh/etc-ssh t
  mkdir -p "$etc"
  for t in rsa ecdsa ed25519; do
    ssh-keygen -q -t $t -N '' -C "host@maintd-lab" -f "$etc/ssh_host_${t}_key"
  done
  [ ! -f /etc/ssh/moduli ] || cp /etc/ssh/moduli "$etc/"
  cat > "$etc/sshd_config" <<EOF
# sshd of a maintd lab node (the node's address is given on the command line)
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_rsa_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
EOF
  cat > "$etc/ssh_config" <<EOF
# ssh client of a maintd lab node: Ganeti passes what it needs on the command line
Host *
    BatchMode yes
EOF
}

# A guest OS that installs nothing: Ganeti wants an OS for every instance, even diskless
# ones on the fake hypervisor.
write_noop_os() {
  local os=$1/srv/ganeti/os/noop script
  mkdir -p "$os"
  for script in create import export rename verify; do
    printf '#!/bin/sh\n# maintd lab: nothing to install on a fake instance\nexit 0\n' > "$os/$script"
    chmod 0755 "$os/$script"
  done
  echo 20 > "$os/ganeti_api_version"
  echo default > "$os/variants.list"
  : > "$os/parameters.list"
}

write_node_files() {
  local n=$1 d
  d=$(node_dir "$n")
  mkdir -p "$d"/{etc-ganeti,var-lib-ganeti,var-run-ganeti,var-log-ganeti,root-ssh,srv}
  # The package's /etc/ganeti holds the symlinks (lib, share) that select Ganeti's version.
  cp -a /etc/ganeti/. "$d/etc-ganeti/"
  # The package's daemon defaults, but RAPI on every address of the node rather than on
  # its loopback only, so that it answers on the cluster address.
  if [ -f /etc/default/ganeti ]; then
    sed 's/^RAPI_ARGS=.*/RAPI_ARGS="--require-authentication"/' /etc/default/ganeti
  else
    echo 'RAPI_ARGS="--require-authentication"'
  fi > "$d/default-ganeti"
  install -m 0600 "$LAB/ssh/id_ed25519" "$d/root-ssh/id_ed25519"
  install -m 0644 "$LAB/ssh/id_ed25519.pub" "$d/root-ssh/id_ed25519.pub"
  install -m 0600 "$LAB/ssh/id_ed25519.pub" "$d/root-ssh/authorized_keys"
  chmod 0700 "$d/root-ssh"
  write_noop_os "$d"
}

# What the lab adds to the host outside $LAB, recorded so that down.sh takes it away again:
# the empty directory a node mounts root's .ssh on, if the host has none, and the mount
# (and directory) `ip netns add` makes of /run/netns, if there is none yet.
prepare_host() {
  if [ ! -d /root/.ssh ]; then
    mkdir -m 0700 /root/.ssh
    echo "dir /root/.ssh" >> "$LAB/host-changes"
  fi
  [ -d /run/netns ] || echo "dir /run/netns" >> "$LAB/host-changes"
  mountpoint -q /run/netns || echo "mount /run/netns" >> "$LAB/host-changes"
}

# ------------------------------------------------------------------------------------------
# Machines: namespaces, links, holders

# Plug namespace $1 into the switch: a veth pair, "$2" on the switch side, eth0 inside
# with address $3.
plug() {
  ip link add "$2" netns "$NS_SWITCH" type veth peer name eth0 netns "$1"
  ip -n "$NS_SWITCH" link set "$2" master br0 up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" link set eth0 up
}

# Start the holder of machine directory $2 in namespace $1, with hostname $3.
start_holder() {
  local ns=$1 dir=$2 name=$3 _
  rm -f "$dir/holder.pid"
  setsid ip netns exec "$ns" unshare --uts --mount --propagation private -- \
    bash "$HERE/lib/holder.sh" "$LAB" "$dir" "$name" > "$dir/holder.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    holder_of "$dir" > /dev/null && return 0
    sleep 0.1
  done
  fail "the holder of $name did not start: $(cat "$dir/holder.log")"
}

build_network() {
  ip netns add "$NS_SWITCH"
  ip -n "$NS_SWITCH" link set lo up
  ip -n "$NS_SWITCH" link add br0 type bridge
  ip -n "$NS_SWITCH" link set br0 up

  ip netns add "$NS_CLIENT"
  ip -n "$NS_CLIENT" link set lo up
  plug "$NS_CLIENT" client "$CLIENT_IP"
  start_holder "$NS_CLIENT" "$LAB/client" "client.$DOMAIN"
}

start_node() {
  local n=$1 ns=$NS_NODE$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  plug "$ns" "node$n" "$(node_ip "$n")"
  # xen-br0, the cluster's default NIC link, must exist on every node even though the
  # fake hypervisor plugs nothing into it.
  ip -n "$ns" link add xen-br0 type bridge
  ip -n "$ns" link set xen-br0 up
  start_holder "$ns" "$(node_dir "$n")" "$(node_fqdn "$n")"
  # sshd for Ganeti's node-to-node commands (gnt-node add, verify, ...).
  on_node "$n" /usr/sbin/sshd -o "ListenAddress=$(node_ip "$n")" -E "$(node_dir "$n")/sshd.log" \
    < /dev/null > /dev/null 2>&1 || fail "sshd did not start on node$n"
}

# ------------------------------------------------------------------------------------------
# The cluster

# Run a Ganeti command on node1, its output to $LAB/run/$1.log; on failure show the log.
ganeti() {
  local step=$1 log=$LAB/run/$1.log
  shift
  on_node 1 "$@" < /dev/null > "$log" 2>&1 || { cat "$log" >&2; fail "$step failed (log: $log)"; }
}

init_cluster() {
  local init=(
    gnt-cluster init
    --no-etc-hosts           # the lab's /etc/hosts is fixed and shared
    --no-ssh-init            # root's keys are the lab's, not Ganeti's
    --master-netdev=eth0     # the cluster address goes on the master's eth0
    --enabled-hypervisors=fake
    --enabled-disk-templates=diskless
    # Bounds that admit the lab's small diskless instances.
    --ipolicy-bounds-specs="min:disk-size=0,cpu-count=1,disk-count=0,memory-size=1,nic-count=0,spindle-use=0/max:disk-size=1048576,cpu-count=8,disk-count=16,memory-size=32768,nic-count=8,spindle-use=12"
    "$CLUSTER_FQDN"
  )
  say "gnt-cluster init"
  ganeti init "${init[@]}"
  # mond's diskstats collector cannot parse this kernel's /proc/diskstats and the drbd one
  # wants /proc/drbd; either makes /1/report/all fail, so both are off.
  ganeti collectors gnt-cluster modify --enabled-data-collectors=diskstats=false,drbd=false

  # The RAPI accounts. Written before the other nodes join, so that Ganeti copies the file
  # to them (and to any later master); ganeti-rapi notices changes by itself.
  local users=$LAB/run/rapi-users
  {
    echo "# user password options (maintd lab)"
    echo "$RAPI_WRITE_USER {cleartext}$RAPI_WRITE_PASS write"
    echo "$RAPI_READ_USER {cleartext}$RAPI_READ_PASS read"
  } > "$users"
  install -o gnt-rapi -g gnt-masterd -m 0640 "$users" "$(node_dir 1)/var-lib-ganeti/rapi/users"
}

add_nodes() {
  local n
  for n in $(seq 2 "$nodes"); do
    say "gnt-node add node$n"
    ganeti "add-node$n" gnt-node add "$(node_fqdn "$n")"
  done
  # What a boot would start on a node besides noded (confd; master-only daemons decline).
  for n in $(seq 2 "$nodes"); do
    on_node "$n" /usr/lib/ganeti/daemon-util start-all < /dev/null > "$LAB/run/start-node$n.log" 2>&1 || true
  done
}

add_instances() {
  local i home
  [ "$instances" -gt 0 ] || return 0
  say "adding $instances instance(s)"
  for i in $(seq 1 "$instances"); do
    # inst1 and inst2 both on node2, so that one node has several instances to move; the
    # others one per node in turn, from node3 (inst3) on.
    if [ "$nodes" -ge 2 ] && [ "$i" -le 2 ]; then
      home=2
    else
      home=$(((i - 1) % nodes + 1))
    fi
    ganeti "add-inst$i" gnt-instance add -t diskless -o noop+default -B memory=128,vcpus=1 \
      --no-name-check --no-ip-check -n "$(node_fqdn "$home")" "inst$i.$DOMAIN"
  done
}

# ------------------------------------------------------------------------------------------
# Host side: loopback forwards, helpers

# 127.0.0.1:$2 on the host to $3 inside the lab: a socat on the host hands each connection
# through a unix socket (which reaches across network namespaces) to a socat in the client
# namespace, which connects to the target.
forward() {
  local name=$1 port=$2 target=$3 sock=$LAB/run/fwd-$1.sock pid _
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    fail "port $port is taken on this host: something else listens there (an older lab?)"
  fi
  rm -f "$sock"
  setsid ip netns exec "$NS_CLIENT" socat "UNIX-LISTEN:$sock,fork,mode=0600" "TCP:$target" \
    < /dev/null > /dev/null 2>&1 &
  for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || fail "the forward to $target did not start"
  setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$sock" \
    < /dev/null > /dev/null 2>&1 &
  pid=$!
  echo "$pid $(proc_start "$pid") $name" >> "$LAB/run/forwarders"
}

open_forwards() {
  local n
  : > "$LAB/run/forwarders"
  [ $forward = 1 ] || return 0
  say "loopback forwards: RAPI on $RAPI_PORT, mond on $((MOND_PORT_BASE + 1))..$((MOND_PORT_BASE + nodes))"
  forward rapi "$RAPI_PORT" "$CLUSTER_IP:5080"
  for n in $(seq 1 "$nodes"); do
    forward "mond-node$n" $((MOND_PORT_BASE + n)) "$(node_ip "$n"):1815"
  done
}

install_helpers() {
  install -m 0755 "$HERE/lib/gx" "$LAB/bin/gx"
  install -m 0755 "$HERE/lib/gclient" "$LAB/bin/gclient"
  # Luxi needs no forward: a unix socket path reaches into node1's namespaces. (After a
  # master failover, the new master's socket is nodes/nodeN/var-run-ganeti/socket/...)
  ln -sfn nodes/node1/var-run-ganeti/socket/ganeti-query "$LAB/luxi.sock"
}

# ------------------------------------------------------------------------------------------

install_packages
if [ $fresh = 0 ] && lab_answers; then
  say "the lab in $LAB is up already ($SHAPE)"
  on_node 1 gnt-node list -o name,role,drained,pinst_cnt < /dev/null || true
  exit 0
fi

# Whatever is there (a lab of another shape, a half-built one, a crashed one) goes first.
rm -f "$LAB/.up"
lab_teardown
rm -rf "${LAB:?}"/{bin,run,ssh,nodes,client,hosts,luxi.sock}
touch "$LAB/.maintd-lab"   # marks the directory as a lab's, for down.sh --purge

trap '[ $? = 0 ] || say "up.sh failed; the lab is left as it is for a look, $HERE/down.sh tears it down"' EXIT
say "building $nodes node(s) in $LAB"
write_shared_files
for n in $(seq 1 "$nodes"); do write_node_files "$n"; done
prepare_host
build_network
for n in $(seq 1 "$nodes"); do start_node "$n"; done
install_helpers

init_cluster
add_nodes
add_instances
open_forwards

# The gate: Ganeti's own verification must pass. ENODESETUP is expected: this kernel has
# no /proc/sysrq-trigger, which Ganeti checks for on every node.
say "gnt-cluster verify"
ganeti verify gnt-cluster verify --error-codes --ignore-errors=ENODESETUP
echo "$SHAPE" > "$LAB/.up"

on_node 1 gnt-node list -o name,role,pinst_cnt,pinst_list < /dev/null
say "the lab is up: $nodes node(s), $instances instance(s)"
cat <<EOF
  on the master:    $LAB/bin/gx gnt-cluster verify   (-n node2 for another node)
  Luxi:             $LAB/luxi.sock
  RAPI (loopback):  https://127.0.0.1:$RAPI_PORT  $RAPI_WRITE_USER/$RAPI_WRITE_PASS (write), $RAPI_READ_USER/$RAPI_READ_PASS (read)
  mond (loopback):  http://127.0.0.1:$((MOND_PORT_BASE + 1))/1/report/all (node1; $MOND_PORT_BASE+N for nodeN)
  by name:          $LAB/bin/gclient curl -sk -u $RAPI_READ_USER:$RAPI_READ_PASS https://$CLUSTER_FQDN:5080/2/info
  tear down:        $HERE/down.sh
EOF
