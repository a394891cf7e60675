# toolhive-operator — see README.md.
SHELL := /bin/bash
CP_DIR ?= $(CURDIR)/.controlplane
# 1: `make controlplane`/`make dev` run a node too (root; see tests/support/src/node.rs).
NODE ?= 1
CARGO ?= cargo
export GOTOOLCHAIN := local

.PHONY: tools test unit integration controlplane controlplane-down dev dev-down crds bench-controller bench-webhook bench-admission bench-pods bench-scopes bench-webhook-attack static clean

## Build (once, cached) etcd, kube-apiserver, kube-controller-manager, kubectl, helm,
## and what the node needs: its Debian packages, kubelet, kube-proxy, kube-scheduler,
## the images it runs (scripts/images.sh), and ToolHive's own operator for the
## differential test (scripts/reference.sh).
tools:
	@scripts/node-packages.sh
	@scripts/tools.sh --node >/dev/null
	@scripts/images.sh >/dev/null
	@scripts/reference.sh >/dev/null

## Everything a fresh machine needs, then formatting, lints (benchmarks included) and
## every test (unit + integration). CI runs this. No backtraces: a failing wait says
## what it waited for, and CI shows only part of a long output.
test: tools
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/operator-image.sh target/image/operator-image.tar
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) TOOLHIVE_IMAGES_DIR=$$(scripts/images.sh --print) RUST_BACKTRACE=0 \
	  TOOLHIVE_OPERATOR_IMAGE=$(CURDIR)/target/image/operator-image.tar $(CARGO) test --workspace --locked -- --test-threads=4

unit:
	$(CARGO) test --workspace --locked --lib --bins

integration: tools
	scripts/operator-image.sh target/image/operator-image.tar
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) TOOLHIVE_IMAGES_DIR=$$(scripts/images.sh --print) \
	  TOOLHIVE_OPERATOR_IMAGE=$(CURDIR)/target/image/operator-image.tar $(CARGO) test --locked --test integration

## Regenerate the CRD (CRDs chart) and the tenancy policy schema (config/) from the Rust types.
crds:
	$(CARGO) run --quiet --bin crdgen -- --write

## Start a local control plane in the background and print its kubeconfig path.
controlplane: tools
	@$(CARGO) build --quiet -p controlplane --bin controlplane
	@mkdir -p $(CP_DIR)
	@if [ -f $(CP_DIR)/pid ] && kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null; then \
	  echo "control plane already running (pid $$(cat $(CP_DIR)/pid))" >&2; \
	else \
	  rm -f $(CP_DIR)/ready; \
	  TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) TOOLHIVE_IMAGES_DIR=$$(scripts/images.sh --print) \
	    nohup target/debug/controlplane --dir $(CP_DIR) $(if $(filter 1,$(NODE)),--node) > $(CP_DIR)/controlplane.log 2>&1 & echo $$! > $(CP_DIR)/pid; \
	  for i in $$(seq 1 600); do [ -f $(CP_DIR)/ready ] && break; kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null || { cat $(CP_DIR)/controlplane.log; exit 1; }; sleep 0.2; done; \
	  [ -f $(CP_DIR)/ready ] || { echo "control plane did not become ready; see $(CP_DIR)/*.log" >&2; exit 1; }; \
	fi
	@echo "kubectl: $$(scripts/tools.sh --print)/kubectl" >&2
	@echo $(CP_DIR)/kubeconfig

controlplane-down:
	@if [ -f $(CP_DIR)/pid ]; then kill $$(cat $(CP_DIR)/pid) 2>/dev/null || true; \
	  for i in $$(seq 1 600); do kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null || break; sleep 0.1; done; \
	  rm -rf $(CP_DIR); echo "control plane stopped"; else echo "no control plane running"; fi

## Control plane + both charts + the operator on the host + an example MCPServer.
dev: controlplane
	@scripts/dev.sh $(CP_DIR)

dev-down:
	@if [ -f $(CP_DIR)/operator.pid ]; then kill $$(cat $(CP_DIR)/operator.pid) 2>/dev/null || true; fi
	@$(MAKE) --no-print-directory controlplane-down

## Benchmarks (not tests): figures and ratios printed as Markdown tables.
bench-controller: tools
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) $(CARGO) bench --locked --bench controller

## Namespace mode idle with 100 allowed namespaces (RSS, watches per scope) and the
## rolling-update handover time. BENCH_OPERATOR_BIN measures another build.
bench-scopes: tools
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) $(CARGO) bench --locked --bench scopes

bench-webhook:
	$(CARGO) bench --locked --bench webhook

## What a client that is not the API server can make the operator hold: floods of 7 MiB
## reviews, slow bodies, idle connections, and the same with --webhook-client-ca.
bench-webhook-attack: tools
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) $(CARGO) bench --locked --bench webhook_attack

## Creates through a real kube-apiserver: no admission, ValidatingAdmissionPolicy, the operator's webhooks.
## MCPServer pod start latency (create -> Ready) on the node `make dev` runs.
bench-pods:
	scripts/bench-pod-start.sh 20

bench-admission: tools
	TOOLHIVE_TOOLS_BIN=$$(scripts/tools.sh --print) $(CARGO) bench --locked --bench admission

## The image's static binary (needs `rustup target add x86_64-unknown-linux-musl` and musl-tools).
static:
	$(CARGO) build --profile image --locked --target x86_64-unknown-linux-musl --bin toolhive-operator
	@ls -l target/x86_64-unknown-linux-musl/image/toolhive-operator

clean: controlplane-down
	$(CARGO) clean
