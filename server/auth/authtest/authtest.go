package authtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
)

// concurrency is how many goroutines race in the concurrency tests.
const concurrency = 8

// timeSlack is how far a time read back may be from the one stored: the
// contracts do not promise more than millisecond precision.
const timeSlack = time.Millisecond

// RunInvalidArgumentTests checks that s refuses arguments that mean
// nothing (empty ids and users, a ttl <= 0) before it writes anything.
func RunInvalidArgumentTests(t *testing.T, s interface {
	auth.TokenStore
	access.ACL
}) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	doc := protocol.NewDocumentID()
	for name, err := range map[string]error{
		"CreateFamily without id":   s.CreateFamily(ctx, auth.Family{User: "u", Created: now, Expires: now}),
		"CreateFamily without user": s.CreateFamily(ctx, auth.Family{ID: "f", Created: now, Expires: now}),
		"RevokeUser without user":   s.RevokeUser(ctx, "", now),
		"Claim without user":        s.Claim(ctx, doc, "", now),
		"Claim of an empty id":      s.Claim(ctx, "", "u", now),
		"Share without user":        s.Share(ctx, doc, "", hub.RoleEditor),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := s.ConsumeOnce(ctx, "k", ttl); err == nil {
			t.Errorf("ConsumeOnce with ttl %v: no error", ttl)
		}
	}
	if _, err := s.ConsumeOnce(ctx, "", time.Minute); err == nil {
		t.Error("ConsumeOnce of an empty key: no error")
	}
	if docs, err := s.DocsOf(ctx, ""); err != nil || len(docs) != 0 {
		t.Errorf("DocsOf(\"\") = %v, %v; want nothing", docs, err)
	}
	if _, err := s.Access(ctx, doc); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("Access after refused calls: %v, want ErrNotFound", err)
	}
}

func newFamilyID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newUser(t *testing.T) string {
	t.Helper()
	return "authtest-user-" + newFamilyID(t)
}

func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return d < timeSlack && d > -timeSlack
}

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error = %v, want one wrapping %q", what, err, want)
	}
}

// cancelled returns a context that is already done.
func cancelled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

func checkCancelled(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%s with a cancelled context: error = %v, want one wrapping context.Canceled", what, err)
	}
}
