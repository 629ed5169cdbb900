# lineworks-operator — every entry point a person or CI needs.
# The first run builds kube-apiserver and kubectl from tools/kube (cached under ~/.cache).

SHELL := /bin/bash
CARGO ?= cargo
CRD_FILE := crds/lineworksnotifiers.lineworks-operator.dev.yaml
CHART_CRD_FILE := charts/lineworks-operator/crds/lineworksnotifiers.lineworks-operator.dev.yaml

.PHONY: demo test test-build lint k8s-binaries node-binaries helm browser-deps node-deps image image-archive crds openapi docs build bench clean-cache

## demo: local control plane + CRD + examples, shown with kubectl (README's first command)
demo: k8s-binaries
	LINEWORKS_K8S_BIN_DIR="$$(scripts/k8s-binaries.sh)" $(CARGO) run --locked -- demo $(ARGS)

## test: formatting, lints, and every test against a real control plane and a real one-node
## cluster (README's second command). Clippy lints the very build the tests run (clippy-driver as
## cargo's workspace wrapper, exactly what `cargo clippy` does, plus code generation), so the
## workspace is compiled once instead of checked and then built; the first-time tool builds
## (kube-apiserver, the node components, helm, the operator image) run beside it.
test: browser-deps node-deps
	$(CARGO) fmt --all --check
	$(MAKE) --no-print-directory -j5 test-build k8s-binaries node-binaries helm image-archive
	LINEWORKS_K8S_BIN_DIR="$$(scripts/k8s-binaries.sh)" \
		LINEWORKS_NODE_BIN_DIR="$$(scripts/k8s-binaries.sh node)" \
		LINEWORKS_HELM="$$(scripts/helm-binary.sh)" \
		$(LINTED) $(CARGO) test --workspace --all-targets --locked --no-fail-fast

# clippy-driver as the workspace's compiler wrapper with `-D warnings` (cargo clippy passes its
# arguments the same way, in CLIPPY_ARGS); dependencies are compiled by plain rustc.
LINTED = RUSTC_WORKSPACE_WRAPPER="$$(rustc --print sysroot)/bin/clippy-driver" \
	CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

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

## docs: regenerate the reference pages (CRD fields, relay API, metrics) from the code
docs: openapi
	$(CARGO) run --quiet -- gen-docs docs

## crds: regenerate the committed CRD from the Rust types
crds:
	$(CARGO) run --quiet -- crd > $(CRD_FILE)
	cp $(CRD_FILE) $(CHART_CRD_FILE)

build:
	$(CARGO) build --release --locked

## clean-cache: forget the built Kubernetes binaries (they rebuild on the next test run)
clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/lineworks-operator"
