package vmtest

import (
	"fmt"
	"io"
	"io/fs"
)

// cpioWriter writes the "newc" format, the only one the kernel unpacks into
// its initramfs.
type cpioWriter struct {
	w     io.Writer
	n     int64
	inode uint32
	err   error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, inode: 1}
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header, name and body. mode carries the file type bits
// (unix S_IF*), rdev is used for device nodes.
func (c *cpioWriter) entry(name string, mode uint32, rmajor, rminor uint32, body []byte) {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.inode, mode, 0, 0, 1, 0, len(body), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.inode++
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
	c.write(body)
	c.pad()
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// Dir adds a directory; parents must have been added first.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) {
	c.entry(name, sIFDIR|uint32(perm.Perm()), 0, 0, nil)
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm fs.FileMode, body []byte) {
	c.entry(name, sIFREG|uint32(perm.Perm()), 0, 0, body)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) {
	c.entry(name, sIFLNK|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) {
	c.entry(name, sIFCHR|uint32(perm.Perm()), major, minor, nil)
}

// Close writes the trailer and reports the first write error.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	if c.err != nil {
		return fmt.Errorf("write initramfs: %w", c.err)
	}
	return nil
}
