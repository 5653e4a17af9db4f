//go:build !unix

package model

// mapFile reads the file into memory on platforms without mmap.
func mapFile(path string, size int64) ([]byte, func(), error) { return readFile(path, size) }

// copyFile reads the file into memory on platforms without mmap.
func copyFile(path string, size int64) ([]byte, func(), error) { return readFile(path, size) }
