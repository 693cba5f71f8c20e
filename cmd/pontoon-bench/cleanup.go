package main

import (
	"fmt"
	"os"
	"sync"
)

// cleanups undoes set-up steps in reverse order. Every step that creates
// something (a namespace, a process, a cgroup, pins) registers its undo
// right away, so an error or an interrupt half way leaves nothing behind.
type cleanups struct {
	mu    sync.Mutex
	steps []cleanupStep
}

type cleanupStep struct {
	what string
	fn   func() error
}

func (c *cleanups) add(what string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps = append(c.steps, cleanupStep{what, fn})
}

// run undoes everything registered so far, last first, and reports (but
// does not stop at) failures.
func (c *cleanups) run() {
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			fmt.Fprintf(os.Stderr, "pontoon-bench: clean up %s: %v\n", steps[i].what, err)
		}
	}
}
