package hub

import (
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// CompactStored runs compactStored, for the external tests.
func CompactStored(store Store, id protocol.DocumentID, timeout time.Duration, m *Metrics) (snapshotBytes, incBytes int, conflict bool, err error) {
	r := compactStored(store, id, timeout, m)
	return r.snapshotBytes, r.incBytes, r.conflict, r.err
}
