# vmtest: the privileged test packages inside qemu, once per Debian kernel.
# Included by the top Makefile, which defines GO.
#
#   make vmtest                              every kernel in KERNELS
#   make vmtest KERNELS=6.1 VMTEST_PKGS=./loader/
#   make vmtest VMTEST_GOFLAGS='-run TestPublishedPorts -v'

# 5.10 is the floor (Debian 11, fetched from bullseye with a private apt
# configuration: vmtest/aptsuite.go); 6.1 has no TCX (legacy tc path), 6.12 has it.
KERNELS ?= 5.10 6.1 6.12
# Heaviest first: vmmatrix queues each kernel's packages in this order (and the
# kernels in KERNELS order, slowest first).
VMTEST_PKGS ?= ./loader/... ./bpf/ ./maps/...
# 5.10 runs the same packages (the loader's ran 12 min there under TCG on a
# loaded machine); VMTEST_PKGS_510 narrows them for a quicker local run.
VMTEST_PKGS_510 ?= $(VMTEST_PKGS)
# -short: the loader churn test makes 2,000 connections, not 10,000, under emulation.
# -timeout: the loader package moves 64 MiB per path under TCG; 10 min is too tight,
# and on 5.10 it ran 12 to 29 min on a loaded machine (vmrun's own limit is 20 min by default).
VMTEST_GOFLAGS ?= -short -timeout 40m
# Each VM has two vCPUs; two at once keep both cores busy without starving
# the tests' own timers.
VMTEST_JOBS ?= 2
# The loader package is a third of the matrix's CPU time: its heaviest tests
# run as shards of their own (a VM each), and the rest as one more. The bpf
# package (11-13 min on 5.10 and 6.1, the pool's tail) runs as two halves:
# the XDP, IPv6, uplink and conntrack tables, then the rest.
VMTEST_SPLIT ?= loader=^TestTraffic$$,^(TestICCAndHairpin|TestMasqueradeAndIsolation|TestIPv6PublishedPorts)$$,^TestSecurity,^TestNAT66$$;bpf=^Test(XDP|IPv6|Uplink|IPIP|Fallback|Conntrack)
# Passed to vmrun before the test binary, e.g. -v for the kernel console.
VMRUN_FLAGS ?= -timeout 40m
VMTEST_APT_PACKAGES := qemu-system-x86 busybox-static
VMRUN := $(CURDIR)/bin/vmrun

.PHONY: vmrun vmtest vmtest-deps vmtest-self

## vmrun: the VM runner used as `go test -exec`, built once instead of `go run` per package
vmrun:
	$(GO) build -o $(VMRUN) ./vmtest/cmd/vmrun

## vmtest-deps: install qemu and busybox-static if missing and cache the kernels
vmtest-deps:
	@missing=$$(for p in $(VMTEST_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) run ./vmtest/cmd/vmrun -fetch $(KERNELS)

## vmtest: run VMTEST_PKGS in a VM per kernel in KERNELS, VMTEST_JOBS VMs at once; fails if any job fails
vmtest: vmrun
	@$(VMRUN) -fetch $(KERNELS) >/dev/null
	$(GO) run ./vmtest/cmd/vmmatrix -go $(GO) -jobs $(VMTEST_JOBS) -kernels "$(KERNELS)" \
		-pkgs-5.10 "$(VMTEST_PKGS_510)" -goflags "$(VMTEST_GOFLAGS)" \
		-vmrun $(VMRUN) -vmrun-flags "$(VMRUN_FLAGS)" -split '$(VMTEST_SPLIT)' $(VMTEST_PKGS)

## vmtest-self: vmtest's own tests, which boot each kernel, systemd and the broken cases
vmtest-self:
	$(GO) test -count=1 -v ./vmtest/...

# `make test` runs the VM matrix after the host tier; VMTEST_IN_TEST=0
# leaves it out (a quick local run).
VMTEST_IN_TEST ?= 1
ifeq ($(VMTEST_IN_TEST),1)
test: vmtest
endif
