//go:build !unix

package store

// allocatedBytes is unknown here: the disk guard counts bbolt's pages only.
func allocatedBytes(string) (int64, bool) { return 0, false }
