// Package gguf reads and writes GGUF v3 files, the single-file model format
// of ggml/llama.cpp: a header, typed metadata key/value pairs, tensor
// descriptors and an aligned data section.
//
// The reader validates everything it parses against the file size before
// allocating, so a truncated or hostile file yields an error wrapping one of
// the sentinel errors below, never a panic or an allocation much larger than
// the file itself. Tensor data is dequantized to float32 on demand.
package gguf

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can classify failures with errors.Is.
var (
	// ErrTruncated means the file ended before a structure it declares.
	ErrTruncated = errors.New("gguf: truncated file")
	// ErrInvalid means the file is structurally inconsistent: bad magic,
	// absurd counts or lengths, misaligned or out-of-range tensor data,
	// duplicate names, or shapes that do not fit their type.
	ErrInvalid = errors.New("gguf: invalid file")
	// ErrUnsupported means the file is well formed but uses a version,
	// value type or tensor type this package does not implement.
	ErrUnsupported = errors.New("gguf: unsupported")
	// ErrNotFound means a requested tensor or metadata key is absent.
	ErrNotFound = errors.New("gguf: not found")
	// ErrType means a metadata value exists but has an unexpected type.
	ErrType = errors.New("gguf: wrong metadata type")
)

// Magic is the four bytes every GGUF file starts with.
const Magic = "GGUF"

// Version is the format version this package writes. Versions 2 and 3 are
// read (they share the 64-bit count layout).
const Version = 3

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the maximum number of tensor dimensions (GGML_MAX_DIMS).
const MaxDims = 4

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types, numbered as in the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// TensorType is a ggml tensor element type.
type TensorType uint32

// Tensor types this package can decode, numbered as in ggml.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q8_0 TensorType = 8
	Q4_K TensorType = 12
	Q6_K TensorType = 14
	BF16 TensorType = 30
)

// String returns the ggml name of the type.
func (t TensorType) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case Q4_0:
		return "Q4_0"
	case Q8_0:
		return "Q8_0"
	case Q4_K:
		return "Q4_K"
	case Q6_K:
		return "Q6_K"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// blockLayout returns elements per block and bytes per block, ok=false for
// types this package cannot decode.
func (t TensorType) blockLayout() (elems, bytes int64, ok bool) {
	switch t {
	case F32:
		return 1, 4, true
	case F16, BF16:
		return 1, 2, true
	case Q8_0:
		return 32, 34, true
	case Q4_0:
		return 32, 18, true
	case Q4_K:
		return 256, 144, true
	case Q6_K:
		return 256, 210, true
	}
	return 0, 0, false
}

// TensorInfo describes one tensor. Dims are in ggml order: Dims[0] is the
// innermost (contiguous) dimension, so a PyTorch weight of shape
// [out, in] has Dims = [in, out] and its data is row-major [out][in].
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   TensorType
	Offset uint64 // relative to the start of the data section
	Size   int64  // bytes of data
}

// Elements returns the number of elements of the tensor.
func (ti TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range ti.Dims {
		n *= int64(d)
	}
	return n
}
