//go:build unix

package store

import (
	"os"
	"syscall"
)

// allocatedBytes returns the space path takes on disk (its allocated
// blocks, file-system metadata such as extent blocks included), or false.
func allocatedBytes(path string) (int64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int64(st.Blocks) * 512, true
}
