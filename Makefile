# lineworks-operator — every entry point a person or CI needs.
# The first run builds kube-apiserver and kubectl from tools/kube (cached under ~/.cache).

SHELL := /bin/bash
CARGO ?= cargo
CRD_FILE := crds/lineworksnotifiers.lineworks-operator.dev.yaml
CHART_CRD_FILE := charts/lineworks-operator/crds/lineworksnotifiers.lineworks-operator.dev.yaml

.PHONY: demo test test-lane-node test-lane-long test-lane-rest test-go-kube test-go-helm test-go-health test-go-prometheus test-go-node test-go-alertmanager test-lane-alerts test-build lint k8s-binaries node-binaries helm browser-deps node-deps image image-archive crds openapi docs build bench clean-cache

## demo: local control plane + CRD + examples, shown with kubectl (README's first command)
demo: k8s-binaries
	LINEWORKS_K8S_BIN_DIR="$$(scripts/k8s-binaries.sh)" $(CARGO) run --locked -- demo $(ARGS)

## test: formatting, lints, and every test against a real control plane and a real one-node
## cluster (README's second command). Clippy lints the very build the tests run (clippy-driver as
## cargo's workspace wrapper, exactly what `cargo clippy` does, plus code generation), so the
## workspace is compiled once instead of checked and then built. The first-time tool builds run
## beside it, and the tests run in four lanes as soon as what each lane needs is built: the
## one-node cluster tests (node binaries and the operator image), the longest test binaries, the
## Alertmanager test (Alertmanager built last), and the rest. Each lane's output is kept in target/test-lanes/<lane>.log and printed when it ends.
test: browser-deps node-deps
	$(CARGO) fmt --all --check
	@rm -rf target/test-lanes
	$(MAKE) --no-print-directory -k -j6 test-lane-node test-lane-long test-lane-rest test-lane-alerts

# clippy-driver as the workspace's compiler wrapper with `-D warnings` (cargo clippy passes its
# arguments the same way, in CLIPPY_ARGS); dependencies are compiled by plain rustc.
LINTED = RUSTC_WORKSPACE_WRAPPER="$$(rustc --print sysroot)/bin/clippy-driver" \
	CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# Test binaries by lane: the one-node cluster's (they wait for the node binaries and the image),
# the longest ones (rotation_kill kills the controller 200 times), and every other target.
NODE_TESTS := cluster image node_lifecycle
LONG_TESTS := rotation_kill relay_contract
ALERTS_TESTS := alertmanager
REST_TESTS := $(filter-out $(NODE_TESTS) $(LONG_TESTS) $(ALERTS_TESTS),$(basename $(notdir $(wildcard tests/*.rs))))

test-lane-node: test-build test-go-node image-archive
	@$(call test_lane,node,$(K8S_ENV) $(HELM_ENV) $(NODE_ENV),$(addprefix --test ,$(NODE_TESTS)))
test-lane-long: test-build test-go-kube
	@$(call test_lane,long,$(K8S_ENV),$(addprefix --test ,$(LONG_TESTS)))
test-lane-alerts: test-build test-go-alertmanager
	@$(call test_lane,alerts,$(K8S_ENV) $(AM_ENV),$(addprefix --test ,$(ALERTS_TESTS)))
test-lane-rest: test-build test-go-prometheus
	@$(call test_lane,rest,$(K8S_ENV) $(HELM_ENV),--lib --bins --benches $(addprefix --test ,$(REST_TESTS)))

# The tools' paths, each only in the lanes that waited for it (asking earlier would build it).
K8S_ENV = LINEWORKS_K8S_BIN_DIR="$$(scripts/k8s-binaries.sh)"
HELM_ENV = LINEWORKS_HELM="$$(scripts/helm-binary.sh)"
NODE_ENV = LINEWORKS_NODE_BIN_DIR="$$(scripts/k8s-binaries.sh node)"
AM_ENV = LINEWORKS_ALERTMANAGER_DIR="$$(scripts/alertmanager-binaries.sh)"

# $(call test_lane,NAME,ENV,TARGETS): the linted build's test binaries (already built: nothing
# recompiles) run with ENV; the log is printed whole when the lane ends.
define test_lane
mkdir -p target/test-lanes; log=target/test-lanes/$(1).log; \
echo "make test: lane $(1) running (tail -f $$log)"; \
$(2) $(LINTED) $(CARGO) test --workspace --locked --no-fail-fast $(3) >"$$log" 2>&1; \
status=$$?; echo "== make test: lane $(1)"; cat "$$log"; exit $$status
endef

# The Go tools one after another, in the order the lanes need them: each go build uses every core,
# and each later one reuses the packages the earlier ones compiled (one shared Go build cache).
test-go-kube:
	@scripts/k8s-binaries.sh >/dev/null
test-go-helm: test-go-kube
	@scripts/helm-binary.sh >/dev/null
test-go-health: test-go-helm
	@scripts/go-tool.sh health >/dev/null
test-go-prometheus: test-go-health
	@scripts/go-tool.sh prometheus/rules >/dev/null
test-go-node: test-go-prometheus
	@scripts/k8s-binaries.sh node >/dev/null
# Last: only the Alertmanager test waits for it, the node lane does not.
test-go-alertmanager: test-go-node
	@scripts/alertmanager-binaries.sh >/dev/null

# The linted test build alone; fails on any warning it prints, so a change in how clippy reads
# its arguments cannot quietly turn the lints into warnings.
test-build:
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	$(LINTED) $(CARGO) test --workspace --all-targets --locked --no-run 2>&1 | tee "$$log"; \
	status=$${PIPESTATUS[0]}; [ "$$status" -eq 0 ] || exit "$$status"; \
	if grep -q '^warning' "$$log"; then echo "make test: the build printed warnings" >&2; exit 1; fi

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## bench: benchmarks that print figures (medians of alternating rounds, ratios to a baseline)
bench: k8s-binaries
	LINEWORKS_K8S_BIN_DIR="$$(scripts/k8s-binaries.sh)" $(CARGO) bench --locked --bench dm_send --bench controller --bench relay

## k8s-binaries: build (once) kube-apiserver and kubectl of the version in tools/kube/go.mod
k8s-binaries:
	@scripts/k8s-binaries.sh >/dev/null

## node-binaries: build (once) kubelet, kube-proxy, kube-scheduler and kube-controller-manager of
## the same version from tools/node, sharing k8s-binaries' Go build cache (for the one-node cluster)
node-binaries:
	@scripts/k8s-binaries.sh node >/dev/null

## helm: build (once) the helm CLI pinned in tools/helm/go.mod, for the chart tests
helm:
	@scripts/helm-binary.sh >/dev/null

## browser-deps: Debian's chromium and chromium-driver for the browser test (installed once)
browser-deps:
	@scripts/browser-deps.sh

## node-deps: Debian's containerd, runc, umoci and musl-tools (installed once)
node-deps:
	@scripts/node-deps.sh

## image: the operator image as an OCI archive without docker (target/image/); IMPORT=<containerd
## socket> also imports it into that containerd
image: node-deps
	scripts/image.sh $(if $(IMPORT),--import $(IMPORT))
	scripts/pause-image.sh $(if $(IMPORT),--import $(IMPORT))

# The image archive alone (no import), built ahead for the tests that need it.
image-archive:
	@scripts/image.sh >/dev/null

## openapi: regenerate the committed relay OpenAPI document
openapi:
	$(CARGO) run --quiet -- relay-openapi > docs/relay-openapi.json

## docs: regenerate the reference pages (CRD fields, relay API, metrics, the chart's README)
docs: openapi
	$(CARGO) run --quiet -- gen-docs .

## crds: regenerate the committed CRD from the Rust types
crds:
	$(CARGO) run --quiet -- crd > $(CRD_FILE)
	cp $(CRD_FILE) $(CHART_CRD_FILE)

build:
	$(CARGO) build --release --locked

## clean-cache: forget the built Kubernetes binaries (they rebuild on the next test run)
clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/lineworks-operator"
