package boltauth

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

// docAccess is the stored form of an access.DocAccess: roles by name.
type docAccess struct {
	Users   map[string]string `json:"users"`
	Link    string            `json:"link"`
	Created time.Time         `json:"created"`
}

func getDoc(tx *bolt.Tx, doc protocol.DocumentID) (docAccess, error) {
	d, err := getRecord[docAccess](tx, bucketDocs, []byte(doc), "access", access.ErrNotFound)
	if err != nil {
		return docAccess{}, err
	}
	if d.Users == nil {
		d.Users = make(map[string]string)
	}
	return d, nil
}

func putDoc(tx *bolt.Tx, doc protocol.DocumentID, d docAccess) error {
	return putRecord(tx, bucketDocs, []byte(doc), d)
}

// index sets user's role on doc in the user's docs index; RoleNone
// removes the entry, and the user's bucket when it is empty.
func index(tx *bolt.Tx, user string, doc protocol.DocumentID, role hub.Role) error {
	ud := tx.Bucket(bucketUserDocs)
	if role == hub.RoleNone {
		b := ud.Bucket([]byte(user))
		if b == nil {
			return nil
		}
		if err := b.Delete([]byte(doc)); err != nil {
			return err
		}
		if k, _ := b.Cursor().First(); k == nil {
			return ud.DeleteBucket([]byte(user))
		}
		return nil
	}
	b, err := ud.CreateBucketIfNotExists([]byte(user))
	if err != nil {
		return err
	}
	return b.Put([]byte(doc), []byte(role.String()))
}

// checkDoc reports why an ACL call on doc may not start.
func (s *Store) checkDoc(ctx context.Context, doc protocol.DocumentID) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return hub.CheckStoreCall(ctx, false, doc)
}

// Claim stores the document's access with user its only owner, and the
// user's index entry, in one transaction.
func (s *Store) Claim(ctx context.Context, doc protocol.DocumentID, user string, at time.Time) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to claim %s: %w", doc, err)
	}
	if user == "" {
		return fmt.Errorf("failed to claim %s: empty user", doc)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDocs).Get([]byte(doc)) != nil {
			return access.ErrClaimed
		}
		d := docAccess{Users: map[string]string{user: hub.RoleOwner.String()}, Link: hub.RoleNone.String(), Created: at}
		if err := putDoc(tx, doc, d); err != nil {
			return err
		}
		return index(tx, user, doc, hub.RoleOwner)
	})
	if err != nil {
		return fmt.Errorf("failed to claim %s: %w", doc, err)
	}
	return nil
}

// Share changes the document's access and the user's index entry in one
// transaction.
func (s *Store) Share(ctx context.Context, doc protocol.DocumentID, user string, role hub.Role) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to share %s: %w", doc, err)
	}
	if user == "" {
		return fmt.Errorf("failed to share %s: empty user", doc)
	}
	if role < hub.RoleNone || role > hub.RoleOwner {
		return fmt.Errorf("failed to share %s: role %d: %w", doc, int(role), access.ErrInvalidRole)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		owner := hub.RoleOwner.String()
		if d.Users[user] == owner && role != hub.RoleOwner {
			owners := 0
			for _, r := range d.Users {
				if r == owner {
					owners++
				}
			}
			if owners == 1 {
				return access.ErrLastOwner
			}
		}
		if role == hub.RoleNone {
			delete(d.Users, user)
		} else {
			d.Users[user] = role.String()
		}
		if err := putDoc(tx, doc, d); err != nil {
			return err
		}
		return index(tx, user, doc, role)
	})
	if err != nil {
		return fmt.Errorf("failed to share %s with %q: %w", doc, user, err)
	}
	return nil
}

// SetLink sets the document's link role.
func (s *Store) SetLink(ctx context.Context, doc protocol.DocumentID, role hub.Role) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to set the link role of %s: %w", doc, err)
	}
	if role != hub.RoleNone && role != hub.RoleViewer && role != hub.RoleEditor {
		return fmt.Errorf("failed to set the link role of %s: role %d: %w", doc, int(role), access.ErrInvalidRole)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		d.Link = role.String()
		return putDoc(tx, doc, d)
	})
	if err != nil {
		return fmt.Errorf("failed to set the link role of %s: %w", doc, err)
	}
	return nil
}

// Access returns a copy of the document's access.
func (s *Store) Access(ctx context.Context, doc protocol.DocumentID) (access.DocAccess, error) {
	if err := s.checkDoc(ctx, doc); err != nil {
		return access.DocAccess{}, fmt.Errorf("failed to read access to %s: %w", doc, err)
	}
	var out access.DocAccess
	err := s.view(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		out = access.DocAccess{Users: make(map[string]hub.Role, len(d.Users)), Created: d.Created}
		for u, name := range d.Users {
			r, err := access.ParseRole(name)
			if err != nil || r == hub.RoleNone {
				return fmt.Errorf("malformed role of %q: %q", u, name)
			}
			out.Users[u] = r
		}
		out.Link, err = access.ParseRole(d.Link)
		return err
	})
	if err != nil {
		return access.DocAccess{}, fmt.Errorf("failed to read access to %s: %w", doc, err)
	}
	return out, nil
}

// DocsOf reads the user's index, which is in document id order.
func (s *Store) DocsOf(ctx context.Context, user string) ([]access.UserDoc, error) {
	var out []access.UserDoc
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUserDocs).Bucket([]byte(user))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := access.ParseRole(string(v))
			if err != nil {
				return err
			}
			out = append(out, access.UserDoc{ID: protocol.DocumentID(k), Role: r})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the documents of %q: %w", user, err)
	}
	return out, nil
}

// Delete removes the document's access and its users' index entries in
// one transaction.
func (s *Store) Delete(ctx context.Context, doc protocol.DocumentID) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to delete the access of %s: %w", doc, err)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		for u := range d.Users {
			if err := index(tx, u, doc, hub.RoleNone); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketDocs).Delete([]byte(doc))
	})
	if err != nil {
		return fmt.Errorf("failed to delete the access of %s: %w", doc, err)
	}
	return nil
}

// ClaimedDocs returns the id of every document that has access stored
// (every claimed document), in id order, read in one transaction. Backups
// (server/backup) use it to find the access lists to export.
func (s *Store) ClaimedDocs(ctx context.Context) ([]protocol.DocumentID, error) {
	var ids []protocol.DocumentID
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDocs).ForEach(func(k, _ []byte) error {
			ids = append(ids, protocol.DocumentID(k)) // copies out of the mmap
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list claimed documents: %w", err)
	}
	return ids, nil
}
