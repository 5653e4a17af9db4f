package model

import (
	"fmt"
	"os"
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
