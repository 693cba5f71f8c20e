package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Config wraps the single-entry config map.
type Config struct{ m *ebpf.Map }

func NewConfig(m *ebpf.Map) *Config { return &Config{m: m} }

func (c *Config) Get() (ConfigValue, error) {
	var v ConfigValue
	if err := c.m.Lookup(uint32(0), &v); err != nil {
		return v, fmt.Errorf("read datapath config: %w", err)
	}
	return v, nil
}

func (c *Config) Set(v ConfigValue) error {
	if err := c.m.Put(uint32(0), v); err != nil {
		return fmt.Errorf("write datapath config: %w", err)
	}
	return nil
}
