package boltauth

import (
	"testing"

	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth/authtest"
)

func TestACL(t *testing.T) {
	authtest.RunACLTests(t, func(t *testing.T) access.ACL { return openTemp(t) })
}

func TestClaimedDocs(t *testing.T) {
	authtest.RunClaimedDocsTests(t, func(t *testing.T) authtest.ListACL { return openTemp(t) })
}
