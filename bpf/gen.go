// Package bpf holds Pontoon's BPF programs and the Go bindings bpf2go
// generates for them. The generated *_bpfel.go and *_bpfel.o files are
// committed so that building Pontoon needs no clang; `make generate`
// refreshes them and `make check` fails when they are stale.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -output-stem tc_uplink TcUplink tc_uplink.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -output-stem tc_bridge TcBridge tc_bridge.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -output-stem tc_endpoint TcEndpoint tc_endpoint.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -output-stem sock Sock sock.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -output-stem xdp_uplink XdpUplink xdp_uplink.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DXDP_SYN_OPTIONS_TO_TC" -target bpfel -go-package bpf -output-stem xdp_uplink_synopts_to_tc XdpUplinkSynoptsToTc xdp_uplink.c -- -I/usr/include/x86_64-linux-gnu
