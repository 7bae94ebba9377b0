package node

import (
	"fmt"
	"os"

	"github.com/plaithub/plait/hub/cryptstore"
	"github.com/plaithub/plait/server/auth"
)

// readKeyFile reads the key file at path; flag names it in errors. Both
// of the node's key files (encryption at rest and auth) have the format
// of cryptstore.ParseKeyFile, the one parser of it.
func readKeyFile(flag, path string) ([]cryptstore.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", flag, err)
	}
	keys, err := cryptstore.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return keys, nil
}

// readAuthKeys reads the auth master keys (--auth-key-file).
func readAuthKeys(path string) (auth.Keys, error) {
	master, err := readKeyFile("auth-key-file", path)
	if err != nil {
		return auth.Keys{}, err
	}
	ks := make([]auth.Key, len(master))
	for i, k := range master {
		ks[i] = auth.Key{ID: k.ID, Secret: k.Secret}
	}
	keys, err := auth.NewKeys(ks)
	if err != nil {
		return auth.Keys{}, fmt.Errorf("auth-key-file %s: %w", path, err)
	}
	return keys, nil
}
