package node

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/plaithub/plait/hub/redistest"
)

// burnCPU keeps every core busy until the test ends (at most 5 minutes):
// the create-then-find race shows on a busy machine.
func burnCPU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range runtime.NumCPU() {
		wg.Go(func() {
			x := 0
			for ctx.Err() == nil {
				for i := range 100_000 {
					x ^= i
				}
			}
			_ = x
		})
	}
}

// TestCreateThenFindAtOnce: the stock automerge-repo client creates a
// document on one connection and another finds it at once, 200 times in a
// row, while the machine is busy: every find succeeds, on one node and
// across two nodes of a cluster (the finder's node learns of the document
// through Redis while its request waits, --pending-wait).
func TestCreateThenFindAtOnce(t *testing.T) {
	requireJS(t)
	t.Run("one node", func(t *testing.T) {
		n := startNode(t, t.TempDir())
		burnCPU(t)
		res := runJS(t, "createfind.mjs", n.URL, n.URL, "--n", "200")
		t.Logf("200 finds right after create: find p50 %vms, p99 %vms, max %vms", res["findMs"].(map[string]any)["p50"], res["findMs"].(map[string]any)["p99"], res["findMs"].(map[string]any)["max"])
	})
	t.Run("two nodes", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		nodes := startClusterNodes(t, srv.URL(), 2)
		burnCPU(t)
		res := runJS(t, "createfind.mjs", nodes[0].URL, nodes[1].URL, "--n", "200")
		t.Logf("200 finds on another node right after create: find p50 %vms, p99 %vms, max %vms", res["findMs"].(map[string]any)["p50"], res["findMs"].(map[string]any)["p99"], res["findMs"].(map[string]any)["max"])
	})
}
