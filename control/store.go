package control

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"

	"github.com/pontoon-net/pontoon/ipam"
)

// The agent's records share the bbolt file with ipam, in buckets of their
// own. The records are the truth: ipam allocations without a record are
// leftovers of a crash between the two writes and are released at start.
const (
	bucketNetworks  = "agent.networks"  // name -> JSON Network
	bucketEndpoints = "agent.endpoints" // name -> JSON Endpoint
	bucketPorts     = "agent.ports"     // proto/hostIP/first -> JSON PortMapping
	bucketMeta      = "agent.meta"
)

var (
	keyNextID = []byte("next_binding_id")
	// keyIPForward holds the forwardRecord of the first agent that turned
	// IPv4 forwarding on; cleanup restores it and deletes the key.
	keyIPForward = []byte("ip_forward_found")
	// keyIPv6Forward is the same for net.ipv6.conf.all.forwarding, which
	// an agent turns on only for a network that needs it.
	keyIPv6Forward = []byte("ipv6_forwarding_found")
)

// forwardRecord is the net.ipv4.ip_forward an agent found, and in which
// network namespace (the setting is per namespace).
type forwardRecord struct {
	Value string `json:"value"`
	Netns nsID   `json:"netns"`
}

func getForwardRecord(s ipam.Store, key []byte) (rec forwardRecord, ok bool, err error) {
	err = s.View(func(tx ipam.Tx) error {
		v := tx.Get(bucketMeta, key)
		if v == nil {
			return nil
		}
		ok = true
		return decode(bucketMeta, key, v, &rec)
	})
	return rec, ok, err
}

// state is the in-memory copy of the records.
type state struct {
	networks  map[string]*Network
	endpoints map[string]*Endpoint
	ports     map[string]*PortMapping
	nextID    uint32
}

func portKey(m *PortMapping) string {
	return fmt.Sprintf("%s/%s/%d", m.Proto, m.HostIP, m.Host.First)
}

func loadState(s ipam.Store) (*state, error) {
	st := &state{
		networks:  map[string]*Network{},
		endpoints: map[string]*Endpoint{},
		ports:     map[string]*PortMapping{},
		nextID:    1,
	}
	err := s.View(func(tx ipam.Tx) error {
		if err := tx.ForEach(bucketNetworks, func(k, v []byte) error {
			n := &Network{}
			st.networks[string(k)] = n
			return decode(bucketNetworks, k, v, n)
		}); err != nil {
			return err
		}
		if err := tx.ForEach(bucketEndpoints, func(k, v []byte) error {
			e := &Endpoint{}
			st.endpoints[string(k)] = e
			return decode(bucketEndpoints, k, v, e)
		}); err != nil {
			return err
		}
		if err := tx.ForEach(bucketPorts, func(k, v []byte) error {
			m := &PortMapping{}
			st.ports[string(k)] = m
			return decode(bucketPorts, k, v, m)
		}); err != nil {
			return err
		}
		if v := tx.Get(bucketMeta, keyNextID); len(v) == 4 {
			st.nextID = binary.BigEndian.Uint32(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	return st, nil
}

func decode(bucket string, k, v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("record %s/%s: %w", bucket, k, err)
	}
	return nil
}

// testPanicBucket (PONTOON_TEST_PANIC_BUCKET) makes every write to that
// bucket panic inside its transaction, as bbolt does on a damaged file: the
// seam the panic-containment test injects through.
var testPanicBucket = os.Getenv("PONTOON_TEST_PANIC_BUCKET")

func put(tx ipam.Tx, bucket, key string, v any) error {
	if bucket == testPanicBucket {
		panic("injected by PONTOON_TEST_PANIC_BUCKET=" + bucket)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, []byte(key), b)
}

func putNextID(tx ipam.Tx, id uint32) error {
	return tx.Put(bucketMeta, keyNextID, binary.BigEndian.AppendUint32(nil, id))
}
