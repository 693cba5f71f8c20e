package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// moduleIndex is what depmod's text modules.dep and modules.builtin say
// about one kernel's modules, keyed by module name.
type moduleIndex struct {
	paths   map[string]string   // name -> path relative to lib/modules/<release>
	deps    map[string][]string // name -> names it needs
	builtin map[string]bool
}

// moduleName turns kernel/fs/9p/9p.ko.xz into 9p; the kernel treats - and _
// alike in module names, so they are folded to _.
func moduleName(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func parseModuleIndex(dep, builtin io.Reader) (*moduleIndex, error) {
	idx := &moduleIndex{
		paths:   map[string]string{},
		deps:    map[string][]string{},
		builtin: map[string]bool{},
	}
	sc := bufio.NewScanner(dep)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := moduleName(mod)
		idx.paths[name] = mod
		for _, d := range strings.Fields(rest) {
			idx.deps[name] = append(idx.deps[name], moduleName(d))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	if builtin != nil {
		sc = bufio.NewScanner(builtin)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				idx.builtin[moduleName(l)] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read modules.builtin: %w", err)
		}
	}
	return idx, nil
}

// loadOrder returns the module files to insmod, dependencies first, so that
// every name in want is present; built-in modules need no file.
func (idx *moduleIndex) loadOrder(want []string) ([]string, error) {
	var order []string
	done := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if done[name] || idx.builtin[name] {
			return nil
		}
		for _, c := range chain {
			if c == name {
				return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
			}
		}
		p, ok := idx.paths[name]
		if !ok {
			return fmt.Errorf("module %s is neither built in nor in modules.dep", name)
		}
		for _, d := range idx.deps[name] {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		done[name] = true
		order = append(order, p)
		return nil
	}
	for _, w := range want {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
