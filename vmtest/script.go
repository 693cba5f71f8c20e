package vmtest

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
)

// Script runs script with `/bin/sh -e` in the guest that o describes and
// returns its output (stdout and stderr merged) with the result; o.Command
// is ignored and o.Stdout, if set, sees the output as it comes. It is the
// building block for the systemd checks:
//
//	out, res, err := vmtest.Script(ctx, vmtest.Options{
//		Kernel:  "6.12",
//		Systemd: true,
//		Files:   []vmtest.File{vmtest.UnitFile("cmd/pontoon/pontoon.service")},
//	}, "systemctl start pontoon && systemctl is-active pontoon")
func Script(ctx context.Context, o Options, script string) (string, *Result, error) {
	var buf bytes.Buffer
	if o.Stdout != nil {
		o.Stdout = io.MultiWriter(&buf, o.Stdout)
	} else {
		o.Stdout = &buf
	}
	o.Command = []string{"/bin/sh", "-ec", script}
	res, err := Run(ctx, o)
	return buf.String(), res, err
}

// UnitFile installs the host's unit file src (a path in the repository) in
// the guest's /etc/systemd/system, where systemd finds it at boot.
func UnitFile(src string) File {
	return File{Src: src, Dst: "/etc/systemd/system/" + filepath.Base(src), Mode: 0o644}
}
