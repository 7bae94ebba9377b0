package node

import (
	"bytes"
	"encoding/hex"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/content"
)

// Who made a change through the documents API is kept in the change
// itself, so that it lives and dies with the document (stored, exported,
// deleted with it) and costs one short field per change: the change's
// extra bytes (which Automerge keeps and ignores) carry authorMagic and
// the user, sealed with the node's auth keys. Readers of the document see
// an opaque value; GET history opens it for owners. The seal binds the
// document, the change's actor and its seq: a client that copies it into a
// change of its own cannot make it name a user (an API change's actor is
// fresh, and the engine refuses a second change with its actor and seq).
// Changes that clients send are not attributed: the node does not record
// who sent each one.

const (
	authorMagic   = "plait-author-v1:"
	authorPurpose = "plait change author v1"
)

// authorSeal is what the seal holds.
type authorSeal struct {
	User  string `json:"u"`
	Doc   string `json:"d"`
	Actor string `json:"a"`
	Seq   uint64 `json:"s"`
}

// authorsNeverExpire is the expiry of author seals: they last as long as
// the keys that sealed them.
var authorsNeverExpire = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// newAuthorSealer returns the sealer of change authors, or nil on an
// anonymous node (no users, no keys).
func newAuthorSealer(n *Node) *auth.Sealer {
	if n.auth == nil {
		return nil
	}
	keys, err := readAuthKeys(n.cfg.AuthKeyFile)
	if err != nil { // read once at start already; should it fail now, changes go unattributed
		n.log.Error("failed to read the auth keys: API changes will not name their authors", "err", err)
		return nil
	}
	return auth.NewSealer(keys)
}

// attribute returns the API's change chunk with its author sealed in,
// and its hash; without a sealer or a user, the chunk as it is.
func (d *docAPI) attribute(doc, user string, chunk []byte, hash automerge.ChangeHash) ([]byte, automerge.ChangeHash, error) {
	if d.authors == nil || user == "" {
		return chunk, hash, nil
	}
	c, err := amsync.ParseChange(chunk)
	if err != nil {
		return nil, hash, err
	}
	sealed, err := d.authors.Seal(authorPurpose, authorSeal{User: user, Doc: doc, Actor: hex.EncodeToString(c.Actor), Seq: c.Seq}, authorsNeverExpire)
	if err != nil {
		return nil, hash, err
	}
	return content.WithExtra(chunk, []byte(authorMagic+sealed))
}

// authorOf returns the user sealed into a change of document doc by
// attribute, or "".
func (d *docAPI) authorOf(doc string, c *amsync.Change) string {
	if d.authors == nil || !bytes.HasPrefix(c.Extra, []byte(authorMagic)) {
		return ""
	}
	var s authorSeal
	if err := d.authors.Open(authorPurpose, string(c.Extra[len(authorMagic):]), &s, time.Now()); err != nil {
		return ""
	}
	if s.Doc != doc || s.Actor != hex.EncodeToString(c.Actor) || s.Seq != c.Seq {
		return ""
	}
	return s.User
}
