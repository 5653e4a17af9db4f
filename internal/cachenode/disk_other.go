//go:build !(linux || darwin || freebsd)

package cachenode

// fsFree is unknown on this platform.
func fsFree(string) (int64, bool) { return 0, false }
