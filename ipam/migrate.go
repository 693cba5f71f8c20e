package ipam

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// schemaVersion changes when a record layout does. Open upgrades a file of
// an older version in the transaction that reads it, and refuses one of a
// newer version instead of misreading it.
//
//  1. one port record per allocation: proto, host IP, first port -> last
//     port, owner
//  2. one port record per 256 ports of a pool (portpage.go)
const schemaVersion = 2

var keySchema = []byte("schema")

// upgradeSchema brings the store to schemaVersion, or refuses it.
func upgradeSchema(tx Tx) error {
	v := tx.Get(bucketMeta, keySchema)
	switch {
	case len(v) == 1 && v[0] == schemaVersion:
		return nil
	case v == nil: // a new file
	case len(v) == 1 && v[0] == 1:
		if err := migratePortsV1(tx); err != nil {
			return fmt.Errorf("upgrade store schema 1 to %d: %w", schemaVersion, err)
		}
	default:
		return fmt.Errorf("store schema %x: this pontoon reads schemas 1 to %d only; use the pontoon that wrote it or start from an empty file", v, schemaVersion)
	}
	return tx.Put(bucketMeta, keySchema, []byte{schemaVersion})
}

// migratePortsV1 replaces the one-record-per-allocation port records of
// schema 1 with page records.
func migratePortsV1(tx Tx) error {
	type record struct {
		key []byte
		pa  PortAllocation
	}
	var old []record
	err := tx.ForEach(bucketPorts, func(k, v []byte) error {
		pa, err := decodePortV1(k, v)
		if err != nil {
			return err
		}
		// What a page record cannot hold (a reversed range, an owner of
		// 256 bytes or more) the allocator never took: this is damage.
		if err := pa.Ports.validate(); err != nil {
			return fmt.Errorf("port record %s: %w", pa, err)
		}
		if err := validateID("owner", pa.Owner); err != nil {
			return fmt.Errorf("port record %s: %w", pa, err)
		}
		old = append(old, record{bytes.Clone(k), pa})
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range old {
		if err := tx.Delete(bucketPorts, r.key); err != nil {
			return err
		}
	}
	// Key order is not page order: a 16-byte address can sort between
	// two keys of a 4-byte one.
	slices.SortFunc(old, func(x, y record) int {
		return cmp.Or(cmp.Compare(x.pa.Proto, y.pa.Proto), x.pa.HostIP.Compare(y.pa.HostIP), cmp.Compare(x.pa.Ports.First, y.pa.Ports.First))
	})
	var e pageEncoder
	for i := 0; i < len(old); {
		pool, page := poolKey{old[i].pa.Proto, old[i].pa.HostIP}, uint8(old[i].pa.Ports.First>>8)
		e.begin()
		for ; i < len(old) && (poolKey{old[i].pa.Proto, old[i].pa.HostIP}) == pool && uint8(old[i].pa.Ports.First>>8) == page; i++ {
			pa := old[i].pa
			e.add(pa.Ports.First, pa.Ports.Last, pa.Owner)
		}
		if err := tx.Put(bucketPorts, pageKey(pool, page), e.finish()); err != nil {
			return err
		}
	}
	return nil
}

// decodePortV1 reads a schema 1 port record.
func decodePortV1(k, v []byte) (PortAllocation, error) {
	if (len(k) != 7 && len(k) != 19) || len(v) < 2 {
		return PortAllocation{}, fmt.Errorf("schema 1 port record %x=%x: malformed", k, v)
	}
	ip, _ := netip.AddrFromSlice(k[1 : len(k)-2])
	return PortAllocation{
		Proto:  Proto(k[0]),
		HostIP: ip,
		Ports:  PortRange{binary.BigEndian.Uint16(k[len(k)-2:]), binary.BigEndian.Uint16(v)},
		Owner:  string(v[2:]),
	}, nil
}
