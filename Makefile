# Plait developer tasks. `make test` is the test command (CI runs it).
GO        ?= go
JS_DIR    := server/testdata/js
WEB_DIR   := webclient
FUZZTIME  ?= 20000x

.PHONY: test deps vet race fuzz run bench bench-engine bench-cluster build image-check loadtest-smoke webclient webclient-check

test: deps vet webclient-check build image-check race fuzz loadtest-smoke

# The release binary. The Dockerfile runs this same target, and CI runs
# image-check on its output, so the image recipe cannot rot unnoticed.
# cgo is required: automerge-go links the Automerge Rust core.
build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags='-s -w' -o bin/plait ./server

# What the image does at start, run against the binary built above.
image-check: build
	bash .ci/image-check bin/plait

# Node packages for the end-to-end tests (real automerge-repo clients), the
# web app's build and browser-test driver, and the programs the tests
# start: redis-server, redis-cli, haproxy, chromium.
deps: $(JS_DIR)/node_modules/.package-lock.json $(WEB_DIR)/node_modules/.package-lock.json
	bash .ci/system-deps

$(JS_DIR)/node_modules/.package-lock.json: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund

$(WEB_DIR)/node_modules/.package-lock.json: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && npm ci --no-audit --no-fund

# Rebuilds the web app into webclient/dist (committed: the node embeds it,
# so `go run ./server` needs no npm step). Commit the result.
webclient: $(WEB_DIR)/node_modules/.package-lock.json
	cd $(WEB_DIR) && npm run build

# Fails when the committed webclient/dist is not what the sources build to
# (type errors fail too). The build is deterministic.
webclient-check: $(WEB_DIR)/node_modules/.package-lock.json
	bash .ci/webclient-check

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

race:
	$(GO) test -race -count=1 -timeout 15m ./...

# Short runs of every fuzz target, by count: Go 1.26's fuzz coordinator can
# miss its own deadline under load with a time budget (golang/go#75804).
# Longer: make fuzz FUZZTIME=2000000x.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzParseMessage$$' -fuzztime $(FUZZTIME) ./pkg/amsync
	$(GO) test -run '^$$' -fuzz '^FuzzParseChange$$' -fuzztime $(FUZZTIME) ./pkg/amsync
	$(GO) test -run '^$$' -fuzz '^FuzzOps$$' -fuzztime $(FUZZTIME) ./pkg/amsync
	$(GO) test -run '^$$' -fuzz '^FuzzOpsEdit$$' -fuzztime $(FUZZTIME) ./pkg/amsync
	$(GO) test -run '^$$' -fuzz '^FuzzSyncData$$' -fuzztime $(FUZZTIME) ./hub
	$(GO) test -run '^$$' -fuzz '^FuzzSnapshotChanges$$' -fuzztime $(FUZZTIME) ./hub
	$(GO) test -run '^$$' -fuzz '^FuzzReceiveMessage$$' -fuzztime $(FUZZTIME) ./pkg/syncengine
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeState$$' -fuzztime $(FUZZTIME) ./pkg/syncengine
	$(GO) test -run '^$$' -fuzz '^FuzzSplitChunks$$' -fuzztime $(FUZZTIME) ./pkg/amsync
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePayload$$' -fuzztime $(FUZZTIME) ./hub/redisbroker
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./hub/cryptstore
	$(GO) test -run '^$$' -fuzz '^FuzzOpenSealed$$' -fuzztime $(FUZZTIME) ./server/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParseAccess$$' -fuzztime $(FUZZTIME) ./server/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParseRefresh$$' -fuzztime $(FUZZTIME) ./server/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/jsonpatch
	$(GO) test -run '^$$' -fuzz '^FuzzEdit$$' -fuzztime $(FUZZTIME) ./server/content
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeads$$' -fuzztime $(FUZZTIME) ./server/content
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./server/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeDelivery$$' -fuzztime $(FUZZTIME) ./server/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzReadArchive$$' -fuzztime $(FUZZTIME) ./server/backup
	$(GO) test -run '^$$' -fuzz '^FuzzParseProxyHeader$$' -fuzztime $(FUZZTIME) ./server/node

# Every load-test scenario at tiny sizes against the built node: fails if a
# report is missing, clients do not converge, or errors occur.
loadtest-smoke: build
	bash .ci/loadtest-smoke

run:
	$(GO) run ./server

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Server CPU per edit, engine vs automerge-go, at 1k/10k/100k changes (about 2 min).
bench-engine:
	$(GO) test -run '^$$' -bench 'ServerEdit' -benchtime 200x ./pkg/syncengine

# Cross-node edit-to-peer latency and Redis CPU: 3 nodes on one redis-server,
# 300 documents edited once a second each for 30 s (about 1 min).
bench-cluster:
	$(GO) test -count=1 ./server/node -run '^TestClusterEditLatency$$' -v -args -cluster.latency 30s -cluster.docs 300
