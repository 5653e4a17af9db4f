# kvcache — build, test, generate, bench, demo.
GO       ?= go
BIN      := $(CURDIR)/bin
TOOLS    := $(CURDIR)/.tools/bin
CMDS     := cachenode worker kvctl kvbench
PLOTDIR  ?= plots
# The build stamped into every binary (internal/buildinfo: --version, the
# first log line, Stats, kvcache_build_info). VERSION is the v* tag of HEAD
# (or "devel"); override it for a release: make build VERSION=v1.2.0.
VERSION ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c; })
LDFLAGS := -X github.com/kvcache/kvcache/internal/buildinfo.version=$(VERSION) -X github.com/kvcache/kvcache/internal/buildinfo.commit=$(COMMIT)
# Pinned generator versions: `make generate` installs exactly these.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build test test-short generate tools lint-proto bench bench-engine demo images clean vet fuzz

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/ $(patsubst %,./%,$(wildcard $(CMDS:%=cmd/%)))

vet:
	$(GO) vet ./...

# The whole suite with the race detector, as CI runs it.
test: vet
	$(GO) test -race -count=1 -timeout 18m ./...

test-short:
	$(GO) test -short -count=1 ./...

tools:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

generate: tools
	PATH=$(TOOLS):$$PATH $(TOOLS)/buf generate

# The v1 contract: buf's STANDARD lint rules, canonical formatting, and no
# breaking change against the commit that froze the v1 names (PROTO_BASELINE).
# A shallow clone without that commit compares against HEAD instead.
PROTO_BASELINE ?= $(shell cat proto/BASELINE 2>/dev/null)
lint-proto: tools
	$(TOOLS)/buf lint
	$(TOOLS)/buf format --diff --exit-code
	@if git cat-file -e "$(PROTO_BASELINE)^{commit}" 2>/dev/null; then \
		echo "buf breaking --against .git#ref=$(PROTO_BASELINE)"; \
		$(TOOLS)/buf breaking --against ".git#ref=$(PROTO_BASELINE)"; \
	else \
		echo "lint-proto: baseline $(PROTO_BASELINE) not in this clone; checking against HEAD"; \
		$(TOOLS)/buf breaking --against ".git#ref=HEAD"; \
	fi

# The data-path benchmark (cmd/kvbench) against one local node, side by side
# with Redis on loopback (Debian's redis-server, installed if missing; kvbench
# starts it on a free port without persistence and stops it when it ends,
# also on failure), then a short run of the codec micro-benchmarks. About two
# minutes; BENCHFLAGS adds kvbench flags (e.g. BENCHFLAGS=-json). Writes
# the fetch-by-block-size and codec-fidelity plots to PLOTDIR (./plots).
bench:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "bench: installing redis-server"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q redis-server >/dev/null; }; }
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/kvbench ./cmd/kvbench
	$(BIN)/kvbench -redis-server "$$(command -v redis-server)" -block-sizes 64KiB,256KiB,4MiB -plot $(PLOTDIR) $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench 'Encode/(int8|int4)$$|Decode/(int8|int4)$$' -benchtime 5x ./pkg/kvblock/

# The engine (pkg/model) against llama.cpp's llama-bench when it is on PATH
# (skipped with a note otherwise) on a generated random-weight 125M Llama
# GGUF in F16 and Q8_0 (kept in $$TMPDIR/kvcache-enginebench), alternating
# rounds, medians; then resident memory in place vs dequantized; then time
# to first token on the F16 file and a 1024-token prompt: llama-server's
# in-process prompt cache (when llama-server is on PATH) against kvcache's
# miss, remote full hit and hot-tier hit (a cache node and two workers
# from bin/, all on loopback); then the worker's hit and miss TTFT on the
# embedded model for prefixes of 1k and 4k tokens. ENGINEFLAGS adds
# enginebench flags (e.g. ENGINEFLAGS='-rounds 3 -llama-bench
# /path/to/llama-bench -llama-server /path/to/llama-server').
bench-engine:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/ ./cmd/enginebench ./cmd/cachenode ./cmd/worker
	$(BIN)/enginebench $(ENGINEFLAGS)
	@echo; echo "| prefix tokens | miss TTFT ms | remote hit TTFT ms | worker-tier hit TTFT ms |"; echo "|---|---|---|---|"
	@$(GO) test -run '^$$' -bench 'TTFT' -benchtime 3x ./pkg/worker/ > $(BIN)/ttft.txt || { cat $(BIN)/ttft.txt; exit 1; }
	@awk ' \
		/^BenchmarkTTFT\/prefix=/ { split($$1, p, "[=/-]"); for (i = 2; i < NF; i++) if ($$(i+1) == "ttft_ms") t[p[3], p[4]] = $$i; n[p[3]] = 1 } \
		END { for (k in n) printf "| %s | %s | %s | %s |\n", k, t[k, "miss"], t[k, "hit"], t[k, "tier"] }' $(BIN)/ttft.txt | sort -t'|' -k2n

# Every decoder of untrusted bytes, FUZZTIME each.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run XXX -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/kvblock/
	$(GO) test -run XXX -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./pkg/gguf/
	$(GO) test -run XXX -fuzz '^FuzzReadRequest$$' -fuzztime $(FUZZTIME) ./internal/dataplane/
	$(GO) test -run XXX -fuzz '^FuzzResponseReader$$' -fuzztime $(FUZZTIME) ./internal/dataplane/
	$(GO) test -run XXX -fuzz '^FuzzReadHello$$' -fuzztime $(FUZZTIME) ./internal/dataplane/
	$(GO) test -run XXX -fuzz '^FuzzBPERoundTrip$$' -fuzztime $(FUZZTIME) ./pkg/tokenizer/
	$(GO) test -run XXX -fuzz '^FuzzEncodeChat$$' -fuzztime $(FUZZTIME) ./pkg/tokenizer/

# Three cache nodes and two workers on loopback, a shared-prefix workload,
# a table of hits and TTFTs, a TTFT sweep over the prefix length, and the
# plots (PNG and SVG) in PLOTDIR; stops everything it started.
demo:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/ ./cmd/cachenode ./cmd/worker ./cmd/kvdemo
	$(BIN)/kvdemo --bin $(BIN) --plot $(PLOTDIR)

# Container images FROM scratch: static binaries into deploy/bin (ignored
# by git), then one image per Dockerfile with deploy/ as the context.
DOCKER     ?= docker
IMAGE_TAG  ?= dev
DEPLOY_BIN := $(CURDIR)/deploy/bin

images:
	@mkdir -p $(DEPLOY_BIN)/empty
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(LDFLAGS)' -o $(DEPLOY_BIN)/ ./cmd/cachenode ./cmd/worker ./cmd/kvctl
	$(DOCKER) build -q -f deploy/Dockerfile.cachenode -t kvcache/cachenode:$(IMAGE_TAG) deploy
	$(DOCKER) build -q -f deploy/Dockerfile.worker -t kvcache/worker:$(IMAGE_TAG) deploy

clean:
	rm -rf $(BIN) $(CURDIR)/.tools
