#!/bin/bash
# The process that keeps one lab machine alive: up.sh starts it inside the machine's
# network namespace and new UTS and mount namespaces. It turns the mount namespace into
# that machine's view of the filesystem, writes its PID and sleeps; everything "on" the
# machine (Ganeti's daemons, sshd, bin/gx commands) enters these namespaces.
#
#   holder.sh LAB MACHINE_DIR HOSTNAME
#
# MACHINE_DIR is $LAB/nodes/nodeN for a Ganeti node, $LAB/client for the client.
set -euo pipefail
lab=$1 dir=$2 name=$3

hostname "$name"
mount --bind "$lab/hosts" /etc/hosts

if [ -d "$dir/var-lib-ganeti" ]; then
  # A private /run: the node's own locks, sshd privilege separation directory and pid
  # files, and nothing of this kind on the host.
  mount -t tmpfs -o mode=0755,size=64m lab-run /run
  mkdir -p /run/ganeti /run/sshd
  install -d -m 1777 /run/lock
  mount --bind "$dir/var-run-ganeti" /run/ganeti
  # Ganeti's configuration and data, the SSH identity every node shares, the OS
  # definitions in /srv.
  mount --bind "$dir/etc-ganeti" /etc/ganeti
  mount --bind "$dir/default-ganeti" /etc/default/ganeti
  mount --bind "$dir/var-lib-ganeti" /var/lib/ganeti
  mount --bind "$dir/var-log-ganeti" /var/log/ganeti
  mount --bind "$dir/root-ssh" /root/.ssh
  mount --bind "$dir/srv" /srv
  mount --bind "$lab/ssh/etc-ssh" /etc/ssh
fi

echo $$ > "$dir/holder.pid"
exec sleep infinity
