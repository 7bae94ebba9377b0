package boltauth

import (
	"testing"
	"time"

	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/authtest"
)

func TestTokenStore(t *testing.T) {
	authtest.RunTokenStoreTests(t, func(t *testing.T) auth.TokenStore { return openTemp(t) })
}

func TestCreateFamilyRefusesTakenID(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	f := auth.Family{ID: "f", User: "u", Created: time.Now(), Expires: time.Now().Add(time.Hour)}
	if err := s.CreateFamily(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeFamily(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFamily(ctx, f); err == nil {
		t.Fatal("CreateFamily over an existing family succeeded")
	}
	if got, err := s.Family(ctx, f.ID); err != nil || !got.Revoked {
		t.Fatalf("family after a refused CreateFamily = %+v, %v; want it still revoked", got, err)
	}
}
