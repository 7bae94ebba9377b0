package hub

import (
	"fmt"

	"github.com/plaithub/plait/pkg/amsync"
)

// checkSyncData validates a client's sync message before any of it reaches
// the Automerge core (a panic there aborts the whole node): the envelope
// must parse and every change chunk must parse with a valid checksum.
func checkSyncData(data []byte) error {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return err
	}
	if m.Type != amsync.MessageTypeSync {
		return fmt.Errorf("sync message type 0x%02x is not supported (this server speaks 0x%02x)", m.Type, amsync.MessageTypeSync)
	}
	for i, c := range m.Changes {
		if _, err := amsync.ParseChange(c); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
	}
	return nil
}
