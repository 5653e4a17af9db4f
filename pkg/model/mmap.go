package model

import (
	"fmt"
	"os"
	"unsafe"
)

// readFile is mapFile's fallback: the whole file on the heap.
func readFile(path string, size int64) ([]byte, func(), error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if int64(len(data)) != size {
		return nil, nil, fmt.Errorf("%w: %s changed size while loading", ErrBadWeights, path)
	}
	return data, func() {}, nil
}

// alignOffset is the offset into b of its first byte aligned to align (a
// power of two).
func alignOffset(b []byte, align int) int {
	p := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	return (align - p&(align-1)) & (align - 1)
}
