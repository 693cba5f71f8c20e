// Package ipam hands out container addresses and host ports and keeps them
// crash-safe.
//
// An [Allocator] holds IP pools per network (one or more IPv4 and IPv6
// subnets, next-fit with wrap-around so a released address comes back as late
// as possible) and host ports per protocol and host address (a port, a range,
// or a run of free ports from the dynamic range). Its state lives in a
// [Store]: every allocation or release is exactly one transaction, and the
// allocator keeps an in-memory view rebuilt from the store at [Open] so it
// never reads the whole store to answer a request. [BoltStore] keeps the state
// in one bbolt file, each transaction first made durable in a small log
// (one write and one fdatasync) and written into bbolt behind the requests;
// [MemStore] keeps it in memory for tests.
//
// Every error wraps one of [ErrInvalid], [ErrInUse], [ErrExhausted] or
// [ErrNotFound]; a failed call leaves the state as it was.
package ipam
