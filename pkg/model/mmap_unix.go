//go:build unix

package model

import (
	"fmt"
	"io"
	"os"
	"runtime"
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

// hugePage is the transparent huge page size copyFile aligns to.
const hugePage = 2 << 20

// copyFile reads size bytes of the file at path into private anonymous
// memory, 2 MiB aligned and advised MADV_HUGEPAGE, then makes it
// read-only. Unlike a file mapping, whose page-table entries a virtual
// machine may drop while the process idles (the first forward pass after
// a 2 s pause then refaults every page: 8 ms became 72-100 ms for 250 MB
// on this project's 2-core VM, see pkg/model/README), anonymous huge pages
// stay mapped. It costs a read of the file at load and the memory is not
// shared with other processes. release frees it; nothing may use data
// afterwards. Where anonymous mappings fail it reads onto the heap.
func copyFile(path string, size int64) (data []byte, release func(), err error) {
	if size <= 0 || int64(int(size)) != size || int(size) > int(^uint(0)>>1)-2*hugePage {
		return nil, nil, fmt.Errorf("%w: cannot load %d bytes", ErrBadWeights, size)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	n := int(size)
	span := (n+hugePage-1)/hugePage*hugePage + hugePage // room to align
	raw, err := syscall.Mmap(-1, 0, span, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return readFile(path, size)
	}
	release = func() { _ = syscall.Munmap(raw) }
	off := alignOffset(raw, hugePage)
	data = raw[off : off+n : off+n]
	// Advice only: a kernel without THP (or with it off) gives 4 KiB pages,
	// which are still kept mapped.
	if runtime.GOOS == "linux" {
		_ = syscall.Madvise(raw[off:off+(n+hugePage-1)/hugePage*hugePage], madvHugepage)
	}
	if _, err := io.ReadFull(io.NewSectionReader(fh, 0, size), data); err != nil {
		release()
		return nil, nil, fmt.Errorf("%w: reading %s: %v", ErrBadWeights, path, err)
	}
	// The weights are immutable: a stray write faults, as with the mapping.
	_ = syscall.Mprotect(raw, syscall.PROT_READ)
	return data, release, nil
}

// madvHugepage is Linux's MADV_HUGEPAGE.
const madvHugepage = 14
