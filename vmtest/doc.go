// Package vmtest boots Debian's own kernels in qemu and runs a command, usually
// a compiled Go test binary, inside them as root.
//
// The guest sees the host's root file system read-only over virtio-9p with a
// tmpfs overlay on top, so host binaries (the test binary, ip, bpftool) run
// unchanged, and the repository is shared read-write at its host path. Kernels
// come from Debian packages, resolved through their meta-packages, fetched with
// apt-get download and unpacked into a cache outside the repository.
//
// The command's output and exit status travel on a second serial port; the
// first carries the kernel console, whose tail is shown when a kernel does not
// boot. Run is the entry point; cmd/vmrun wraps it for `go test -exec`.
package vmtest
