//go:build unix

package model

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps size bytes of the file at path read-only and shared, so the
// weights live in the page cache rather than on the heap. unmap releases
// the mapping; nothing may use data afterwards.
func mapFile(path string, size int64) (data []byte, unmap func(), err error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, nil, fmt.Errorf("%w: cannot map %d bytes", ErrBadWeights, size)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close() // the mapping outlives the descriptor
	data, err = syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return readFile(path, size)
	}
	return data, func() { _ = syscall.Munmap(data) }, nil
}
