#!/usr/bin/env bash
# PID 1 of one lab host (run by lab.sh inside: ip netns exec NS unshare --mount --uts --ipc --pid --fork).
# Mounts the host's overlay root and the pseudo filesystems, then becomes the host's sshd.
# usage: host-init.sh BASE HOSTDIR NAME
set -euo pipefail
base=$1 dir=$2 name=$3
root="$dir/root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755,size=16m tmpfs "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/full" c 1 7
mknod -m 666 "$root/dev/random" c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty" c 5 0
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mkdir -p "$root/run/sshd" "$root/run/lock"
hostname "$name"
echo "$name" > "$root/etc/hostname"
address=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
printf '127.0.0.1 localhost\n%s %s\n' "$address" "$name" > "$root/etc/hosts"
[ -f "$root/etc/ssh/ssh_host_ed25519_key" ] || chroot "$root" ssh-keygen -A >/dev/null
# sshd listens on the host's lab address only: the scale lab's extra addresses (lab/scale.sh) carry the
# host's services, not its management port (a "closed ports only" host must have nothing open there).
exec chroot "$root" /usr/sbin/sshd -D -e -o "ListenAddress=$address"
