# Runs the job and reports on the job tty: a start marker once the guest is
# up, the command's output, then an exit marker with its status, because qemu
# itself exits 0 on any poweroff.
. /run/pontoon-vmtest/config
B=/run/pontoon-vmtest/bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$B
exec </dev/null >"$JOBTTY" 2>&1

state=
if [ "$MODE" = systemd ]; then
	state=$(systemctl is-system-running --wait 2>/dev/null)
	state=" systemd=${state:-unknown}"
fi
echo "$MARKER $NONCE start$state"
$B/sh /run/pontoon-vmtest/job.sh
rc=$?
sync
echo "$MARKER $NONCE exit $rc"
poweroff -f
