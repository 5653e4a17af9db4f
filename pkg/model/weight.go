package model

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// weight is a row-major [rows][cols] matrix (or a vector, rows = 1) kept in
// its file encoding: F32 as float32 values, every other type as the raw
// GGUF bytes (usually a read-only view of the mmapped file), which the
// matmul kernels read in place.
type weight struct {
	typ        gguf.TensorType
	rows, cols int
	f32        []float32 // typ == F32
	raw        []byte    // typ != F32: rows*rowBytes bytes, file layout
	rowBytes   int
}

// f32Weight wraps float32 data (rows*cols values).
func f32Weight(rows, cols int, data []float32) *weight {
	return &weight{typ: gguf.F32, rows: rows, cols: cols, f32: data}
}

// rawWeight wraps raw file bytes of type typ.
func rawWeight(typ gguf.TensorType, rows, cols int, raw []byte) (*weight, error) {
	if rows <= 0 || cols <= 0 || len(raw)%rows != 0 {
		return nil, fmt.Errorf("%w: %v tensor of %d bytes for %dx%d", ErrBadWeights, typ, len(raw), rows, cols)
	}
	w := &weight{typ: typ, rows: rows, cols: cols, raw: raw, rowBytes: len(raw) / rows}
	if typ == gguf.F32 {
		w.f32 = bytesAsFloat32(raw)
		w.raw, w.rowBytes = nil, 0
	}
	// Check that a row decodes (block alignment of cols, sizes).
	if err := gguf.Dequantize(typ, w.rowRaw(0), make([]float32, cols)); err != nil && typ != gguf.F32 {
		return nil, fmt.Errorf("%w: %v", ErrBadWeights, err)
	}
	return w, nil
}

// bytesAsFloat32 views little-endian float32 bytes as []float32 without a
// copy where the platform and alignment allow, else decodes a copy.
func bytesAsFloat32(b []byte) []float32 {
	n := len(b) / 4
	if n == 0 {
		return []float32{}
	}
	var probe uint16 = 1
	le := *(*byte)(unsafe.Pointer(&probe)) == 1
	if le && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

// rowRaw returns the encoded bytes of row r (typ != F32).
func (w *weight) rowRaw(r int) []byte { return w.raw[r*w.rowBytes : (r+1)*w.rowBytes] }

// row writes row r as float32 into dst (len cols).
func (w *weight) row(r int, dst []float32) {
	w.rows2f32(r, r+1, dst)
}

// rows2f32 decodes rows [r0,r1) into dst (len (r1-r0)*cols).
func (w *weight) rows2f32(r0, r1 int, dst []float32) {
	c := w.cols
	switch w.typ {
	case gguf.F32:
		copy(dst, w.f32[r0*c:r1*c])
	case gguf.F16:
		src := unsafe.Slice((*uint16)(unsafe.Pointer(&w.raw[r0*w.rowBytes])), (r1-r0)*c)
		f16ToF32(dst[:(r1-r0)*c], src)
	default:
		for r := r0; r < r1; r++ {
			// Sizes were checked at construction.
			_ = gguf.Dequantize(w.typ, w.rowRaw(r), dst[(r-r0)*c:(r-r0+1)*c])
		}
	}
}

// values returns the whole matrix as float32: the data itself for F32, a
// decoded copy otherwise.
func (w *weight) values() []float32 {
	if w.typ == gguf.F32 {
		return w.f32
	}
	out := make([]float32, w.rows*w.cols)
	w.rows2f32(0, w.rows, out)
	return out
}

// bytes returns the weight's size in memory (file encoding).
func (w *weight) bytes() int {
	if w.typ == gguf.F32 {
		return 4 * len(w.f32)
	}
	return len(w.raw)
}
