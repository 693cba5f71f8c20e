# Stage 2 in command mode, PID 1 in the overlay root: mount what a privileged
# Pontoon test expects of a host (bpffs, cgroup2, tracefs, devpts), bring up
# loopback, then hand over to run.sh.
. /run/pontoon-vmtest/config
B=/run/pontoon-vmtest/bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$B

mount -t bpf bpffs /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
# As systemd does: propagation shared, which `ip netns add` relies on.
mount --make-rshared /
$B/ip link set lo up
$B/hostname pontoon-vmtest
exec $B/sh /run/pontoon-vmtest/run.sh
