//go:build !amd64 || purego

package model

// kernelSets on platforms without assembly kernels: the portable set.
func kernelSets() []*kernels { return []*kernels{portable} }
