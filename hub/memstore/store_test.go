package memstore_test

import (
	"testing"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/hub/storetest"
)

func TestStore(t *testing.T) {
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store { return memstore.New() })
}

func TestDocumentIDs(t *testing.T) {
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore { return memstore.New() })
}
