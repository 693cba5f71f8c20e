// Command vmmatrix runs test packages in a VM per kernel, as jobs on a small
// pool instead of one kernel after another.
//
// Kernel by kernel, the matrix waited on its slowest package each time (the
// loader under TCG on 5.10 ran alone for most of its 34 minutes). Here every
// (kernel, package, shard) is a job, the pool keeps -jobs VMs busy, and a
// package named in -split runs as several shards so one long package does not
// decide the wall time.
//
//	vmmatrix -kernels "5.10 6.1 6.12" -vmrun bin/vmrun \
//	    -split 'loader=^TestTraffic$,^(TestICCAndHairpin|TestMasqueradeAndIsolation)$' \
//	    ./loader/... ./bpf/ ./maps/...
//
// Jobs are queued kernel by kernel in the order given (slowest first), each
// kernel's packages in the order given (heaviest first), so the longest jobs
// start first. Each job's output is
// printed whole when it ends; the exit status is 1 if any job failed.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

type job struct {
	kernel string
	pkg    string
	filter []string // -run or -skip, empty for the whole package
}

func (j job) String() string {
	s := fmt.Sprintf("kernel %s %s", j.kernel, j.pkg)
	if len(j.filter) > 0 {
		s += " " + strings.Join(j.filter, " ")
	}
	return s
}

func main() {
	var (
		kernels    = flag.String("kernels", "5.10 6.1 6.12", "kernel series, space separated")
		pkgs510    = flag.String("pkgs-5.10", "", "packages for 5.10 instead of the arguments (space separated)")
		jobs       = flag.Int("jobs", 2, "VMs at once")
		goflags    = flag.String("goflags", "-short -timeout 40m", "flags for go test")
		vmrun      = flag.String("vmrun", "bin/vmrun", "the vmrun binary, used as go test -exec")
		vmrunFlags = flag.String("vmrun-flags", "-timeout 40m", "flags for vmrun before --")
		split      = flag.String("split", "", "PKG=RE1,RE2;PKG2=...: run PKG as one shard per RE plus one for the rest")
		goBin      = flag.String("go", "go", "the go command")
	)
	flag.Parse()
	if flag.NArg() == 0 {
		fatalf("no packages given: name them, e.g. vmmatrix ./loader/... ./bpf/")
	}
	if *jobs < 1 {
		fatalf("-jobs %d: need at least 1", *jobs)
	}
	shards, err := parseSplit(*split)
	if err != nil {
		fatalf("%v", err)
	}
	if strings.Contains(" "+*goflags, " -run") || strings.Contains(" "+*goflags, " -skip") {
		shards = nil // the caller picked tests: do not shard them again
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pkgsFor := func(kernel string) []string {
		if kernel == "5.10" && *pkgs510 != "" {
			return strings.Fields(*pkgs510)
		}
		return flag.Args()
	}
	var queue []job
	byPattern := map[string][]string{}
	for _, k := range strings.Fields(*kernels) {
		for _, p := range pkgsFor(k) {
			if _, ok := byPattern[p]; !ok {
				list, err := listPackages(ctx, *goBin, p)
				if err != nil {
					fatalf("%v", err)
				}
				byPattern[p] = list
			}
		}
	}
	// Slowest kernel first, then each package in the argument order
	// (heaviest first): close to longest-job-first, so the pool's tail is
	// short jobs.
	for _, k := range strings.Fields(*kernels) {
		for _, p := range pkgsFor(k) {
			for _, imp := range byPattern[p] {
				queue = append(queue, jobsFor(k, imp, shards)...)
			}
		}
	}

	start := time.Now()
	var (
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
		next   = make(chan job)
	)
	for range *jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				ok := run(ctx, j, *goBin, *goflags, *vmrun, *vmrunFlags, &mu)
				if !ok {
					mu.Lock()
					failed = append(failed, j.String())
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range queue {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()

	elapsed := time.Since(start).Round(time.Second)
	if ctx.Err() != nil {
		fatalf("interrupted after %s", elapsed)
	}
	if len(failed) > 0 {
		fmt.Printf("vmtest: FAILED after %s:\n  %s\n", elapsed, strings.Join(failed, "\n  "))
		os.Exit(1)
	}
	fmt.Printf("vmtest: %d jobs passed on kernels %s in %s\n", len(queue), *kernels, elapsed)
}

// parseSplit reads "loader=RE1,RE2;bpf=RE3" into package base name -> patterns.
func parseSplit(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, res, ok := strings.Cut(part, "=")
		if !ok || name == "" || res == "" {
			return nil, fmt.Errorf("-split %q: want PKG=RE1,RE2 (PKG is the package's last path element)", part)
		}
		out[name] = strings.Split(res, ",")
	}
	return out, nil
}

// jobsFor shards a package by its patterns: one job per pattern, then one
// that skips them all, so every test runs exactly once.
func jobsFor(kernel, imp string, shards map[string][]string) []job {
	res, ok := shards[path.Base(imp)]
	if !ok {
		return []job{{kernel: kernel, pkg: imp}}
	}
	var js []job
	for _, re := range res {
		js = append(js, job{kernel: kernel, pkg: imp, filter: []string{"-run", re}})
	}
	return append(js, job{kernel: kernel, pkg: imp, filter: []string{"-skip", strings.Join(res, "|")}})
}

func listPackages(ctx context.Context, goBin, pattern string) ([]string, error) {
	out, err := exec.CommandContext(ctx, goBin, "list", pattern).Output()
	if err != nil {
		return nil, fmt.Errorf("list packages %s: %w", pattern, err)
	}
	return strings.Fields(string(out)), nil
}

func run(ctx context.Context, j job, goBin, goflags, vmrun, vmrunFlags string, mu *sync.Mutex) bool {
	args := []string{"test", "-count=1"}
	args = append(args, strings.Fields(goflags)...)
	args = append(args, j.filter...)
	args = append(args, "-exec", fmt.Sprintf("%s %s -kernel %s --", vmrun, vmrunFlags, j.kernel), j.pkg)

	mu.Lock()
	fmt.Printf("== vmtest: start %s\n", j)
	mu.Unlock()

	start := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	// go test and its VMs share a process group, so an interrupt stops them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()

	verdict := "ok"
	if err != nil {
		verdict = "FAILED (" + err.Error() + ")"
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("== vmtest: %s: %s in %s\n", j, verdict, time.Since(start).Round(time.Second))
	os.Stdout.Write(out.Bytes())
	return err == nil
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vmmatrix: "+format+"\n", args...)
	os.Exit(2)
}
