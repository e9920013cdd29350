# drmcr: CRIU plugin for DRM (GPU) state.
#
# Sections: variables, top-level targets, criu (provisioning), container
# tools (provisioning), plugin, criu end-to-end tests, container tests.
# Add new targets in a section of their own.

# ---------------------------------------------------------------------------
# Variables
# ---------------------------------------------------------------------------
GO        ?= go
BUILD     := build
BIN_DIR   := $(BUILD)/bin
LIB_DIR   := $(BUILD)/lib/criu

# criu >= 4.0 wrapper written by `make criu` (system criu or a private trixie
# one; sets CRIU_FAULT=130 where the probe found it necessary).
CRIU      := $(BIN_DIR)/criu

# The plugin shared object and where criu looks for plugins by default.
PLUGIN_SO       := $(LIB_DIR)/drm_plugin.so
CRIU_PLUGIN_DIR ?= /usr/lib/criu
DESTDIR         ?=

.DEFAULT_GOAL := build

# ---------------------------------------------------------------------------
# Top-level targets
# ---------------------------------------------------------------------------
.PHONY: build install uninstall clean distclean FORCE tools

# Everything a user runs: the plugin, the daemon and the tools, into build/.
build: plugin tools

tools:
	@mkdir -p $(BIN_DIR)
	$(GO) build -o $(BIN_DIR)/ ./cmd/...

install: plugin
	install -d $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.d
	install -m 0644 $(PLUGIN_SO) $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.so
	install -m 0644 $(PLUGIN_CORE) $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.d/drm_plugin_core.so

# Removes exactly what install put there (and the directory it made, if
# nothing else is in it).
uninstall:
	rm -f $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.so $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.d/drm_plugin_core.so
	-rmdir $(DESTDIR)$(CRIU_PLUGIN_DIR)/drm_plugin.d 2>/dev/null

# clean keeps the provisioned criu (build/criu, build/bin/criu); distclean
# removes the whole build tree.
clean:
	rm -rf $(LIB_DIR)

distclean:
	rm -rf $(BUILD)

FORCE:

# ---------------------------------------------------------------------------
# criu provisioning (scripts/provision-criu.sh; needs root)
# ---------------------------------------------------------------------------
.PHONY: criu criu-force

# Fast no-op when already provisioned.
criu:
	@scripts/provision-criu.sh

criu-force:
	@scripts/provision-criu.sh --force

# ---------------------------------------------------------------------------
# Container tools (scripts/provision-containers.sh; needs root to install)
# ---------------------------------------------------------------------------
.PHONY: containers

# Debian's runc, iptables and podman, installed with apt only when missing.
containers:
	@scripts/provision-containers.sh

# ---------------------------------------------------------------------------
# Plugin: drm_plugin.so (C, plugin/c), the only thing criu loads, and the Go
# library it runs in a helper process, drm_plugin.d/drm_plugin_core.so
# (plugin/core). criu loads every *.so of its plugin directory, so the Go
# library lives in a subdirectory.
# ---------------------------------------------------------------------------
.PHONY: plugin

CC          ?= cc
PLUGIN_CORE := $(LIB_DIR)/drm_plugin.d/drm_plugin_core.so
PLUGIN_C    := $(wildcard plugin/c/*.c) $(wildcard plugin/c/*.h)
# Extra Go build tags for the library (tests use drmcr_testclaim).
PLUGIN_TAGS ?=

plugin: $(PLUGIN_SO) $(PLUGIN_CORE)

$(PLUGIN_SO): $(PLUGIN_C)
	@mkdir -p $(dir $@)
	$(CC) -shared -fPIC -fvisibility=hidden -O2 -Wall -Wextra -Werror -o $@ $(filter %.c,$(PLUGIN_C)) -ldl

# Always hand over to go build: it knows the real dependencies (drmcore and
# everything below it) and its cache makes an up-to-date build cheap.
$(PLUGIN_CORE): FORCE
	@mkdir -p $(dir $@)
	CGO_ENABLED=1 $(GO) build -tags '$(PLUGIN_TAGS)' -buildmode=c-shared -o $@ ./plugin/core
	@rm -f $(basename $@).h

# ---------------------------------------------------------------------------
# criu end-to-end tests (tests/criu: real criu, needs root)
# ---------------------------------------------------------------------------
.PHONY: test-criu

# The tests build their own copies of the plugin (plain and with the
# drmcr_testclaim tag); they only need the provisioned criu.
test-criu: criu
	$(GO) test -count=1 ./tests/criu

# ---------------------------------------------------------------------------
# Container tests (tests/containers: real runc, podman and criu, needs root)
# ---------------------------------------------------------------------------
.PHONY: test-containers

# The tests use the plugin directory as built ($(LIB_DIR), the whole of it).
test-containers: criu containers plugin
	$(GO) test -count=1 -v ./tests/containers

# ---------------------------------------------------------------------------
# Tests, benchmarks, the demo
# ---------------------------------------------------------------------------
.PHONY: test check e2e bench demo proto graphviz fuzz

# The README's test command: static checks, then every test with the race
# detector, the end-to-end tests with real criu, runc and podman included
# (provisioned first; they fail, never skip, if a tool cannot run), then a
# short run of every fuzz target. The container tests use the plugin
# directory as built.
test: criu containers plugin check
	$(GO) test -race -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory fuzz

# Every fuzz target in turn, FUZZTIME each (a duration, or Nx inputs);
# FUZZ=REGEXP picks targets by "package/FuzzX". See docs/FUZZING.md.
FUZZTIME ?= 2s
FUZZ     ?= .
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ='$(FUZZ)' scripts/fuzz.sh

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags drmcr_testclaim ./plugin/...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Only the end-to-end tests with real criu (and runc and podman).
e2e: criu containers plugin
	$(GO) test -count=1 -v ./tests/e2e ./tests/criu ./tests/containers

# Benchmarks, each with its baseline measured in the same run: the Go
# benchmarks, then drmbench (real criu, kernelsimd and gpuload; needs root),
# which prints the table of docs/BENCHMARKS.md and fails if a target is
# missed. Sizes: BENCH_ARGS, e.g. BENCH_ARGS="-gib 2 -pairs 5 -only perbo".
BENCH_ARGS ?=
bench: criu build
	$(GO) test -run '^$$' -bench . -benchmem ./kernelsim/... ./drmcore/...
	$(GO) test -run '^$$' -bench Hook -benchtime 20000x ./tests/criu
	$(BIN_DIR)/drmbench -criu $(CRIU) -lib $(LIB_DIR) -bin $(BIN_DIR) -dir $(BUILD)/bench $(BENCH_ARGS)

# The whole product in one command: see cmd/drmdemo.
# It keeps the checkpoint in build/demo/checkpoint (and the sharing graph,
# drawn by graphviz, in build/demo/graph.svg) for drmcrit.
demo: criu build graphviz
	$(BIN_DIR)/drmdemo -criu $(abspath $(CRIU)) -lib $(abspath $(LIB_DIR)) -bin $(abspath $(BIN_DIR)) -keep $(abspath $(BUILD))/demo/checkpoint

graphviz:
	@command -v dot >/dev/null || { apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; }

# Regenerate the protobuf code (needs protoc: installed here if missing).
proto:
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --proto_path=. --go_out=. --go_opt=module=drmcr kernelsim/uapi/uapi.proto kernelsim/uapi/xe_drm.proto images/images.proto
