package vmtest

import (
	"strconv"
	"strings"
)

// qemuConfig is one VM's qemu command line.
type qemuConfig struct {
	Accel    Accel
	CPUs     int
	MemoryMB int
	Kernel   string
	Initrd   string
	Append   string
	Shares   []share
}

// Serial ports are files the host passes as extra descriptors: fd 3 is the
// kernel console (ttyS0), fd 4 the job tty (ttyS1).
const (
	consoleFD = 3
	jobFD     = 4
)

func (q qemuConfig) args() []string {
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		// A panicking guest reboots (panic=-1); -no-reboot turns that into
		// qemu exiting, so a kernel that cannot boot ends the run at once.
		"-no-reboot",
		"-machine", "pc",
		"-smp", strconv.Itoa(q.CPUs),
		"-m", strconv.Itoa(q.MemoryMB),
		"-kernel", q.Kernel,
		"-initrd", q.Initrd,
		"-append", q.Append,
		"-chardev", "file,id=console,path=/dev/fd/" + strconv.Itoa(consoleFD),
		"-serial", "chardev:console",
		"-chardev", "file,id=job,path=/dev/fd/" + strconv.Itoa(jobFD),
		"-serial", "chardev:job",
		// The host root is read-only: the guest writes into a tmpfs overlay.
		"-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
	}
	switch q.Accel {
	case AccelKVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	default:
		a = append(a, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	for _, s := range q.Shares {
		a = append(a,
			"-fsdev", "local,id="+s.Tag+",path="+qemuEscape(s.Path)+",security_model=none,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev="+s.Tag+",mount_tag="+s.Tag)
	}
	return a
}

// qemuEscape doubles commas, qemu's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
