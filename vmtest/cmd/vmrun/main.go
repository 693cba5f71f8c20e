// Command vmrun boots a Debian kernel in qemu and runs a command inside as
// root, with the host's root read-only under a throwaway overlay and the Go
// module read-write. It exits with the command's status, so it works as
// `go test -exec`:
//
//	go build -o bin/vmrun ./vmtest/cmd/vmrun
//	go test -exec "$PWD/bin/vmrun -kernel 6.1 --" ./loader/
//	go run ./vmtest/cmd/vmrun -kernel 6.12 -- ip -d link
//	go run ./vmtest/cmd/vmrun -fetch 6.1 6.12
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pontoon-net/pontoon/vmtest"
)

// exitInfra is the status when the VM itself failed, as env(1) and
// docker run use 125 for their own failures.
const exitInfra = 125

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("vmrun", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vmrun [flags] -- COMMAND [ARG...]\n       vmrun -fetch KERNEL...\n\nflags:\n")
		fs.PrintDefaults()
	}
	var (
		o       vmtest.Options
		rw      listFlag
		files   listFlag
		appends listFlag
		accel   string
		noShare bool
		fetch   bool
		verbose bool
	)
	fs.StringVar(&o.Kernel, "kernel", envOr("VMTEST_KERNEL", "6.12"), "kernel series (5.10, 6.1, 6.12) or linux-image package `name`")
	fs.BoolVar(&o.Systemd, "systemd", false, "boot the host's systemd as PID 1 and run the command from a unit")
	fs.DurationVar(&o.Timeout, "timeout", 0, "limit for the whole run (default 20m)")
	fs.DurationVar(&o.BootTimeout, "boot-timeout", 0, "limit until the command starts (default 5m)")
	fs.StringVar(&accel, "accel", "auto", "accelerator: auto, kvm or tcg (auto avoids a PVM /dev/kvm)")
	fs.IntVar(&o.CPUs, "cpus", 0, "guest CPUs (default min(2, host CPUs))")
	fs.IntVar(&o.MemoryMB, "mem", 0, "guest memory in MiB (default 2048)")
	fs.StringVar(&o.Dir, "dir", "", "working folder in the guest (default the current one)")
	fs.Var(&rw, "rw", "host `folder` to share read-write at the same path (repeatable; default the Go module)")
	fs.BoolVar(&noShare, "no-rw", false, "share nothing read-write")
	fs.Var(&files, "file", "copy a host file into the guest: `GUEST=HOST` (repeatable)")
	fs.Var(&appends, "append", "extra kernel command line `argument` (repeatable)")
	fs.BoolVar(&fetch, "fetch", false, "only download and cache the kernels named as arguments")
	fs.BoolVar(&verbose, "v", false, "stream the kernel console to stderr")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	if fetch {
		return fetchKernels(ctx, fs.Args())
	}
	o.Command = fs.Args()
	if len(o.Command) == 0 {
		fs.Usage()
		return 2
	}
	o.Accel = vmtest.Accel(accel)
	o.KernelArgs = appends
	if noShare {
		o.Share = []string{}
	} else if len(rw) > 0 {
		o.Share = rw
	}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || dst == "" || src == "" {
			fmt.Fprintf(os.Stderr, "vmrun: -file %q: want GUEST=HOST\n", f)
			return 2
		}
		st, err := os.Stat(src)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmrun: -file %s: %v\n", f, err)
			return 2
		}
		o.Files = append(o.Files, vmtest.File{Dst: dst, Src: src, Mode: st.Mode().Perm()})
	}
	o.Stdout = os.Stdout
	o.Log = os.Stderr
	if verbose {
		o.Console = os.Stderr
	}

	res, err := vmtest.Run(ctx, o)
	if be := (*vmtest.BootError)(nil); errors.As(err, &be) && be.CrashedBeforeCommand() && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\nvmrun: the kernel crashed before the command started; booting it once more\n", err)
		res, err = vmtest.Run(ctx, o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
		return exitInfra
	}
	fmt.Fprintf(os.Stderr, "vmrun: %s (%s): booted in %.1fs, command ran %.1fs\n",
		res.Kernel.Release, res.Accel, res.Boot.Seconds(), res.Run.Seconds())
	if res.ExitCode != 0 {
		msg := fmt.Sprintf("vmrun: %s exited with status %d in kernel %s", filepath.Base(o.Command[0]), res.ExitCode, res.Kernel.Release)
		if len(res.FailedTests) > 0 {
			msg += "; failed: " + strings.Join(res.FailedTests, ", ")
		}
		fmt.Fprintln(os.Stderr, msg)
	}
	return res.ExitCode
}

func fetchKernels(ctx context.Context, specs []string) int {
	if len(specs) == 0 {
		fmt.Fprintln(os.Stderr, "vmrun: -fetch needs kernels to fetch, e.g. vmrun -fetch 6.1 6.12")
		return 2
	}
	for _, s := range specs {
		k, err := vmtest.FetchKernel(ctx, s, os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
			return exitInfra
		}
		fmt.Fprintf(io.Writer(os.Stdout), "%s\t%s\t%s\n", s, k.Package, k.Root)
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
