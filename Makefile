# anvil — see README.md. Every target installs what it needs (hack/deps.sh).
SHELL := /bin/bash
GO ?= go
KUBE_VERSION ?= v1.37.2
# The previous release, which make upgrade-test upgrades from.
KUBE_PREV_VERSION ?= v1.36.3
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS := -s -w \
	-X anvil.dev/anvil/internal/buildinfo.version=$(VERSION) \
	-X anvil.dev/anvil/internal/buildinfo.commit=$(COMMIT) \
	-X anvil.dev/anvil/internal/buildinfo.date=$(DATE)
GOBIN := $(shell $(GO) env GOPATH)/bin
# Test time limits: the e2e tests bring up real control planes and labs.
TEST_TIMEOUT ?= 40m
FUZZTIME ?= 20s

.PHONY: all anvil kube kube-prev conformance-build deps test unit lint fuzz bench demo demo-clean conformance upgrade-test clean

all: anvil

# bin/anvil: static, version stamped. Go's own cache makes this a no-op when
# nothing changed.
anvil:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' -o bin/anvil ./cmd/anvil

deps:
	@hack/deps.sh

# kube: build the Kubernetes control plane and the node stack (kubelet,
# kube-proxy, containerd, runc, CNI plugins, crictl, and the pause, CoreDNS and
# test image archives) into bin/kube/<version>, each from its pinned module in
# images/, or reuse every build whose inputs match (bin/kube/<version>, then the
# per-user cache); seconds when nothing changed. payload.json lists every file,
# its sha256 and whether workers or only masters need it.
kube: deps anvil
	bin/anvil images build --version $(KUBE_VERSION) --source images --out bin/kube

# kube-prev: the previous release beside it (bin/kube/$(KUBE_PREV_VERSION)),
# from its own pinned modules (images/kube-v1.36, images/kubenode-v1.36),
# cached the same way: about 12 minutes the first time.
kube-prev: deps anvil
	bin/anvil images build --version $(KUBE_PREV_VERSION) --source images --out bin/kube

# conformance-build: the upstream e2e test binary, the ginkgo CLI and the
# images the suite runs (anvil images build --conformance), cached by input
# hash like kube: `make test` runs a focused part of the suite on its lab.
conformance-build: deps anvil
	bin/anvil images build --conformance --version $(KUBE_VERSION) --source images --out bin/conformance

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

# test: everything, the way CI runs it (.ci/run): lint, the unit tests, the
# end-to-end tests against real components, and a short run of every fuzzer.
test: deps kube conformance-build lint
	set -o pipefail; ANVIL_TEST_BINARY=$(CURDIR)/bin/anvil $(GO) test -v -count=1 -timeout $(TEST_TIMEOUT) -p 1 ./... 2>&1 | hack/testsummary.sh
	$(MAKE) --no-print-directory fuzz

unit:
	$(GO) test -short ./...

# fuzz: each parser's fuzz target for FUZZTIME.
fuzz:
	@hack/fuzz.sh $(FUZZTIME)

# bench: every measured figure beside its anchor and the ratio (the
# upgrade figures need the previous release: kube-prev).
bench: deps kube kube-prev
	ANVIL_UPGRADE_E2E=1 ANVIL_TEST_BINARY=$(CURDIR)/bin/anvil $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./... 2>&1 | tee bin/bench.log | grep -E '^(FIGURE|ok|FAIL|---)'

# demo: the main job: a lab of machines on this host (3 masters, 2 workers;
# systemd and sshd in each) made a cluster by `anvil cluster apply` over SSH,
# then `kubectl get nodes -o wide`. demo-clean removes the lab and the cluster.
demo: deps kube
	KUBE_VERSION=$(KUBE_VERSION) hack/demo.sh

demo-clean:
	hack/demo.sh clean

# conformance: the upstream conformance suite against a lab cluster (3
# masters, 2 workers), offline: builds e2e.test and the suite's images
# (anvil images build --conformance, cached), provisions the lab with the
# images on every node, runs the suite (FOCUS, SKIP; every [Conformance]
# test by default), writes bin/conformance/{report/junit_01.xml,summary.txt}
# and removes the lab unless KEEP=1. See docs/conformance.md.
conformance: deps kube
	KUBE_VERSION=$(KUBE_VERSION) hack/conformance.sh

# upgrade-test: the day-two suite. A lab of 3 masters and 2 workers made
# with $(KUBE_PREV_VERSION) is upgraded to $(KUBE_VERSION) by `anvil cluster
# apply` while a writer creates objects through the VIP and a reader asks a
# Service, then rolled back with --rollback; another 3 + 2 lab has its CAs
# replaced by `anvil cluster rotate-ca` under the same writer and reader
# (about 17 minutes after the builds). make test runs their focused parts:
# the skew policy, the switch plan and the validation (TestCheckUpgrade,
# TestUpgradeSwitches, TestValidateUpgrade), the rotation stages on a PKI,
# resumed (TestRotateCA, TestRotateCAResumes), the bundles a node refuses
# (TestCheckBundle) and where a rotation resumes (TestResumeFrom).
upgrade-test: deps kube kube-prev
	set -o pipefail; ANVIL_UPGRADE_E2E=1 ANVIL_TEST_BINARY=$(CURDIR)/bin/anvil $(GO) test -v -count=1 -timeout $(TEST_TIMEOUT) -run '^(TestUpgradeE2E|TestCARotationE2E)$$' ./installer/ 2>&1 | hack/testsummary.sh

clean:
	rm -rf bin
