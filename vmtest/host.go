package vmtest

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
)

// MissingError says which host tool is missing and which Debian package
// provides it.
type MissingError struct {
	Tool    string
	Package string
	Why     string // optional: why the tool found does not do
}

func (e *MissingError) Error() string {
	why := "not found"
	if e.Why != "" {
		why = e.Why
	}
	return fmt.Sprintf("%s %s: install it with `apt-get install %s` (or `make vmtest-deps`)", e.Tool, why, e.Package)
}

// QemuBinary is the emulator vmtest drives.
const QemuBinary = "qemu-system-x86_64"

func findQemu() (string, error) {
	p, err := exec.LookPath(QemuBinary)
	if err != nil {
		return "", &MissingError{Tool: QemuBinary, Package: "qemu-system-x86"}
	}
	return p, nil
}

// findBusybox returns a statically linked busybox: the initramfs has no
// shared libraries for a dynamic one to load.
func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if static, err := isStatic(p); err == nil {
			if !static {
				return "", &MissingError{Tool: "busybox", Package: "busybox-static", Why: "at " + p + " is dynamically linked"}
			}
			return p, nil
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		if static, err := isStatic(p); err == nil && static {
			return p, nil
		}
	}
	return "", &MissingError{Tool: "busybox", Package: "busybox-static"}
}

func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// Accel is a qemu accelerator choice.
type Accel string

const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// hostPaths are the files accelerator detection reads; tests point them
// elsewhere.
type hostPaths struct {
	kvmPVM string
	kvmDev string
}

var defaultHostPaths = hostPaths{kvmPVM: "/sys/module/kvm_pvm", kvmDev: "/dev/kvm"}

// chooseAccel picks KVM only where stock kernels really boot under it. A PVM
// /dev/kvm (kvm_pvm loaded) accepts -enable-kvm but Debian kernels abort or
// hang in it, so it counts as no KVM. The reason is returned for the log.
func chooseAccel(want Accel, hp hostPaths) (Accel, string, error) {
	switch want {
	case AccelTCG:
		return AccelTCG, "asked for", nil
	case AccelKVM, AccelAuto, "":
	default:
		return "", "", fmt.Errorf("unknown accelerator %q: use auto, kvm or tcg", want)
	}
	why := ""
	if _, err := os.Stat(hp.kvmPVM); err == nil {
		why = "/dev/kvm is PVM (" + hp.kvmPVM + " is loaded), which stock kernels do not boot under"
	} else if f, err := os.OpenFile(hp.kvmDev, os.O_RDWR, 0); err != nil {
		why = "no usable " + hp.kvmDev
	} else {
		f.Close()
		return AccelKVM, "usable " + hp.kvmDev, nil
	}
	if want == AccelKVM {
		return "", "", fmt.Errorf("kvm asked for but %s: use -accel tcg", why)
	}
	return AccelTCG, why, nil
}
