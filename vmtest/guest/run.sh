# Runs the job and reports on the job tty: a start marker once the guest is
# up, the command's output, then an exit marker with its status, because qemu
# itself exits 0 on any poweroff.
. /run/pontoon-vmtest/config
B=/run/pontoon-vmtest/bin
R=/run/pontoon-vmtest
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$B
exec </dev/null >"$JOBTTY" 2>&1

state=
if [ "$MODE" = systemd ]; then
	state=$(systemctl is-system-running --wait 2>/dev/null)
	state=" systemd=${state:-unknown}"
fi
echo "$MARKER $NONCE start$state"

# The host's limits, not the kernel's defaults for PID 1: hard first, as a
# soft limit cannot exceed it.
for l in $LIMITS; do
	flag=${l%%:*}
	rest=${l#*:}
	soft=${rest%%:*}
	hard=${rest#*:}
	ulimit -H "-$flag" "$hard" 2>/dev/null
	ulimit -S "-$flag" "$soft" 2>/dev/null
done

# The command writes into a pipe, as under go test, not into a tty: tools
# such as systemctl would otherwise start a pager or print colours.
mkfifo "$R/out"
$B/cat "$R/out" &
cat=$!
$B/sh "$R/job.sh" >"$R/out" 2>&1
rc=$?
# A process the command left running may hold the pipe open: let cat drain
# for a moment, then stop it so the exit marker still comes.
n=0
while [ "$n" -lt 20 ]; do
	st=
	read -r _ _ st _ 2>/dev/null <"/proc/$cat/stat"
	[ -z "$st" ] || [ "$st" = Z ] && break
	sleep 0.1
	n=$((n + 1))
done
kill "$cat" 2>/dev/null
wait "$cat" 2>/dev/null
sync
echo "$MARKER $NONCE exit $rc"
poweroff -f
