#!/bin/busybox sh
# Stage 1, PID 1 in the initramfs: load the few modules needed to reach the
# host's root over virtio-9p, stack a tmpfs overlay on it so the guest can
# write without touching the host, mount the shared read-write folders, then
# switch_root into it. Everything it needs is in /pontoon (see initramfs.go).
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
. /pontoon/config

# The job tty carries only markers and the command's output; raw mode keeps
# the bytes as the command wrote them.
stty -F "$JOBTTY" raw -echo 2>/dev/null

fail() {
	echo "vmtest: $*" >/dev/console
	echo "$MARKER $NONCE error $*" >"$JOBTTY"
	sync
	poweroff -f
	sleep 60
}

for m in $MODULES; do
	insmod "/lib/modules/$KVER/$m" || fail "cannot load module $m"
done

mkdir -p /mnt/host /mnt/rw /newroot
# virtio devices probe asynchronously after their driver loads: retry briefly.
n=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /mnt/host 2>/dev/null; do
	n=$((n + 1))
	[ "$n" -ge 100 ] && fail "cannot mount the host root over 9p (tag hostroot)"
	sleep 0.1
done
mount -t tmpfs -o mode=0755 rw /mnt/rw || fail "cannot mount tmpfs for the overlay"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work root /newroot ||
	fail "cannot mount the overlay root"

# A host that is itself a container marks its root; in the guest the mark
# would make systemd think it runs in a container and ignore the kernel
# command line. Removing it only whites it out in the overlay.
rm -f /newroot/.dockerenv /newroot/run/.containerenv

tab=$(printf '\t')
while IFS="$tab" read -r tag path; do
	[ -n "$tag" ] || continue
	mkdir -p "/newroot$path"
	mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=262144 "$tag" "/newroot$path" ||
		fail "cannot mount shared folder $path (tag $tag)"
done </pontoon/shares

# The host's /lib/modules belongs to the host kernel; the guest gets the
# unpacked package's tree (with a busybox depmod index) instead.
mkdir -p /newroot/lib/modules
mount --bind "/newroot$MODROOT" /newroot/lib/modules || fail "cannot bind the kernel modules from $MODROOT"

# A fresh /run: the host's has its own netns handles, sockets and pid files.
mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
R=/newroot/run/pontoon-vmtest
mkdir -p "$R/bin"
cp /bin/busybox "$R/busybox"
cp /pontoon/config /pontoon/job.sh /pontoon/run.sh /pontoon/stage2.sh "$R/"
for a in $GUEST_APPLETS; do
	ln -s ../busybox "$R/bin/$a"
done
# busybox's modprobe reads the text index depmod wrote into the cache; the
# host's kmod (if any) would want modules.dep.bin, so the guest uses busybox.
for a in modprobe insmod rmmod lsmod depmod modinfo; do
	for d in /newroot/usr/sbin /newroot/sbin; do
		[ -d "$d" ] && ln -sf /run/pontoon-vmtest/bin/$a "$d/$a"
	done
done
echo /run/pontoon-vmtest/bin/modprobe >/proc/sys/kernel/modprobe

while IFS="$tab" read -r idx mode dst; do
	[ -n "$idx" ] || continue
	mkdir -p "/newroot${dst%/*}"
	cp "/pontoon/files/$idx" "/newroot$dst" || fail "cannot install $dst"
	chmod "$mode" "/newroot$dst"
done </pontoon/files.list

if [ "$MODE" = systemd ]; then
	# The host's fstab names the host's disks; waiting for them would stall boot.
	: >/newroot/etc/fstab
	# Debian's tmp.conf says "D /tmp": empty it at boot. /tmp here is the
	# host's under the overlay and holds the binary under test (go test
	# builds it there); wiping it would also mean a whiteout per file.
	mkdir -p /newroot/etc/tmpfiles.d
	echo "d /tmp 1777 root root -" >/newroot/etc/tmpfiles.d/tmp.conf
	cp /pontoon/pontoon-vmtest.target /pontoon/pontoon-vmtest.service /newroot/etc/systemd/system/ ||
		fail "cannot install the vmtest units"
fi

mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc

if [ "$MODE" = systemd ]; then
	[ -x /newroot/lib/systemd/systemd ] || fail "no /lib/systemd/systemd on the host: install systemd"
	exec switch_root /newroot /lib/systemd/systemd
fi
exec switch_root /newroot /run/pontoon-vmtest/busybox sh /run/pontoon-vmtest/stage2.sh
