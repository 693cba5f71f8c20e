# Pontoon: container bridge networking in BPF, without iptables or proxies.
# Every target works on a fresh Debian 12 machine after `make deps`.

GO ?= go
BIN := bin
# Privileged tests build network namespaces and load BPF: they run as root.
GOTEST ?= $(GO) test -count=1 -timeout 30m

# Debian packages the build, the tests and the demo need.
APT_PACKAGES := clang llvm libbpf-dev linux-libc-dev bpftool iproute2 util-linux \
	iptables nftables ethtool iperf3 procps curl python3
# The CNI tests: the bridge and host-local plugins, Podman 4.3 with runc
# (never crun: it fails on a hybrid cgroup layout; 'crun-' below keeps apt
# from choosing it for Podman), and busybox-static for the test image.
CNI_APT_PACKAGES := runc podman containernetworking-plugins conmon busybox-static
# cnitool drives the plugin in the tests without an engine.
CNITOOL_VERSION := v1.3.1
# The Docker tests start a dockerd of their own (busybox-static makes their
# image). Installing docker.io would start the system's dockerd, which writes
# iptables rules and makes docker0: while it installs, a policy-rc.d refuses
# every service start (unless the host has a policy of its own), and the
# units it enables for the next boot are disabled again.
DOCKER_APT_PACKAGES := docker.io busybox-static

.PHONY: all deps build generate check test test-host fuzz demo bench clean

all: build

## deps: install the Debian packages and Go modules that are missing
deps:
	@missing=$$(for p in $(APT_PACKAGES) $(CNI_APT_PACKAGES) $(VMTEST_APT_PACKAGES) $(DOCKER_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		policy=; case " $$missing " in *" docker.io "*) \
			if [ ! -e /usr/sbin/policy-rc.d ]; then \
				policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 0755 $$policy; \
				trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
			fi;; esac; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing crun- || exit 1; \
		case " $$missing " in *" docker.io "*) \
			echo "docker.io installed for the tests: its dockerd was not started, and is not started at boot"; \
			systemctl disable docker.service docker.socket >/dev/null 2>&1 || true;; esac; \
	fi
	$(GO) mod download
	@[ -x $(BIN)/cnitool ] || GOBIN=$(abspath $(BIN)) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)

## build: the pontoon binary and the pontoon-cni plugin (needs no clang: the BPF objects are committed)
build:
	$(GO) build -o $(BIN)/pontoon ./cmd/pontoon
	$(GO) build -o $(BIN)/pontoon-cni ./cmd/pontoon-cni

## generate: recompile the BPF C and regenerate the Go bindings
generate:
	$(GO) generate ./bpf/

## check: formatting, vet, and committed BPF objects matching their C source
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@rm -rf .cache/gencheck && mkdir -p .cache/gencheck && cp -r bpf .cache/gencheck/ && \
	(cd .cache/gencheck/bpf && $(GO) generate . >/dev/null) && \
	for f in bpf/*_bpfel.go bpf/*_bpfel.o; do \
		cmp -s $$f .cache/gencheck/$$f || { echo "$$f is stale: run 'make generate' and commit"; exit 1; }; \
	done && rm -rf .cache/gencheck && echo "generated BPF objects are current"
	$(GO) vet ./...

## test: every test, host tier and VM matrix (privileged tests need root)
test: test-host

test-host:
	$(GOTEST) ./...

## fuzz: mutated packets through every tc program, checked for crashes, leaks and bad checksums (needs root)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDatapath -fuzztime $(FUZZTIME) ./bpf/

## demo: set up, build, and run the main job in a throwaway namespace world
demo: deps build
	./cmd/demo/demo.sh $(BIN)/pontoon

## bench: Pontoon against direct, iptables DNAT and docker-proxy (BENCH_FLAGS=--quick for a short run)
bench: deps
	$(GO) run ./cmd/pontoon-bench $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)

-include vmtest/vmtest.mk
