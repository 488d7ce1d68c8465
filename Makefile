# Cairn — see README.md. `make` lists the targets.

SHELL := /bin/bash
GO    ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin

# Pinned tools, installed by the targets that use them.
STATICCHECK_VERSION := v0.6.1
STATICCHECK := $(GOBIN)/staticcheck

# Real OpenZFS runs in a VM on machines without the module (../shared/zfsvm).
ZFSVM ?= $(abspath ../shared/zfsvm/zfsvm)

.DEFAULT_GOAL := help
.PHONY: help deps build run test test-zfs lint check bench bench-storage bench-channel bench-backup generate

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what building and testing need (Debian packages)
	@command -v gcc >/dev/null && command -v ip >/dev/null && command -v nbdinfo >/dev/null && command -v nbdcopy >/dev/null && \
		command -v chromium >/dev/null && command -v lvcreate >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev iproute2 libnbd-bin chromium lvm2; }

build: ## build the programs into bin/
	$(GO) build -o bin/ ./cmd/...

run: build ## start the appliance on embedded defaults (data in ./var, http://127.0.0.1:8080, agent gateway :8443)
	./bin/cairn-appliance -data ./var -listen 127.0.0.1:8080 -gateway :8443

test: deps ## run every test with the race detector (OpenZFS tests: make test-zfs); vet the agent for Windows
	GOOS=windows GOARCH=amd64 $(GO) vet ./agent/... ./cmd/cairn-agent/
	CAIRN_TEST_NETNS=1 CAIRN_TEST_BROWSER=1 $(GO) test -race -count=1 -timeout 30m ./...

test-zfs: deps ## in the VM of ../shared/zfsvm, one at a time: storage and backup tests on real OpenZFS, the LVM snapshot provider on real LVM
	@test -x "$(ZFSVM)" || { echo "test-zfs: $(ZFSVM) not found"; exit 1; }
	$(ZFSVM) setup
	CAIRN_TEST_ZFS=1 $(GO) test -race -count=1 -p 1 -timeout 30m -exec "$(ZFSVM) run --" ./zfs/openzfs/ ./appliance/backup/
	CAIRN_TEST_LVM=1 $(GO) test -race -count=1 -timeout 10m -run TestLVMReal -exec "$(ZFSVM) run --" ./agent/snapshot/

generate: ## regenerate the agent API code with buf (pinned); must leave no diff
	$(GO) generate ./api/...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK) ## go vet and staticcheck
	$(GO) vet ./...
	$(STATICCHECK) ./...

check: lint test generate ## lint, test, and check that go mod tidy, go generate and gofmt change nothing
	$(GO) mod tidy && git diff --exit-code -- go.mod go.sum api/
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench: bench-storage bench-channel bench-backup ## run every benchmark and print its figures

bench-storage: ## embedded pool: 1 GiB full write and a 5% incremental vs plain file writes
	$(GO) test -run '^$$' -bench 'BenchmarkPool' -benchtime 1x -timeout 30m ./zfs/embedded/

bench-channel: ## agent channel: 1 GiB gRPC SpeedTest over yamux over TLS vs plain TLS, and the Ping round trip
	$(GO) test -run '^$$' -bench 'BenchmarkChannel' -benchtime 1x -timeout 10m ./pairing/channel/

bench-backup: deps ## backups: agent and appliance processes, 4 GiB image, full and 5% incremental vs restic and a plain read; writes bench/results.md
	@command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
	$(GO) test -run '^$$' -bench 'BenchmarkBackup' -benchtime 1x -timeout 60m ./e2e/
