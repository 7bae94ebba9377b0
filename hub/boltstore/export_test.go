package boltstore

// SetMigrateBytes sets the bound of one migration step and returns a
// function that restores it.
func SetMigrateBytes(n int) (restore func()) {
	old := migrateBytes
	migrateBytes = n
	return func() { migrateBytes = old }
}
