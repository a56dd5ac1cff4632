#!/bin/bash
# Tear down maintd's live lab (lab/up.sh). See lab/README.md.
#
#   lab/down.sh [--purge]
#
# Stops the lab's processes (those inside its namespaces, and the loopback forwarders
# up.sh recorded), deletes its network namespaces, undoes what up.sh made on the host and
# removes bin/ and luxi.sock, so that $LAB no longer looks like an up lab. The nodes'
# directories stay for a look at their logs; --purge removes $LAB as well. Running it on a
# lab that is down already does nothing and succeeds.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$HERE/lib/common.sh"

purge=0
case ${1:-} in
  '') ;;
  --purge) purge=1 ;;
  -h | --help) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  *) echo "down.sh: unknown argument: $1" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || fail "run me as root"
[ ! -d "$LAB" ] || LAB=$(cd "$LAB" && pwd -P)

rm -f "$LAB/.up"
lab_teardown

# What up.sh added to the host (newest first), as long as nothing else uses it since.
if [ -f "$LAB/host-changes" ]; then
  while read -r kind path; do
    case $kind in
      mount)
        if mountpoint -q "$path"; then
          if [ -z "$(ls -A "$path")" ]; then umount "$path"; else say "left $path mounted: in use"; fi
        fi ;;
      dir) [ ! -d "$path" ] || rmdir "$path" 2>/dev/null || say "left $path in place: not empty" ;;
    esac
  done < <(tac "$LAB/host-changes")
  rm -f "$LAB/host-changes"
fi

rm -rf "${LAB:?}/bin" "$LAB/luxi.sock" "$LAB"/run/fwd-*.sock
for dir in "$LAB"/nodes/node* "$LAB/client"; do
  rm -f "$dir/holder.pid"
done

if [ $purge = 1 ] && [ -d "$LAB" ]; then
  if [ -f "$LAB/.maintd-lab" ]; then
    rm -rf "$LAB"
    say "removed $LAB"
  else
    say "not removing $LAB: up.sh did not make it"
  fi
fi
say "the lab is down"
