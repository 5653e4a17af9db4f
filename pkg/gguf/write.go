package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// Writer builds a GGUF v3 file in memory-light fashion: metadata and tensors
// are collected, then WriteTo emits header, metadata, tensor infos, padding
// and the aligned data section. It is meant for tests and generators.
type Writer struct {
	keys    []string
	vals    map[string]any
	tensors []wtensor
	names   map[string]bool
}

type wtensor struct {
	name string
	dims []uint64
	typ  TensorType
	data []byte
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer {
	return &Writer{vals: map[string]any{}, names: map[string]bool{}}
}

// SetKV sets a metadata value. Supported Go types: uint8, int8, uint16,
// int16, uint32, int32, uint64, int64, int (written as int64), float32,
// float64, bool, string, and slices of any of these. Setting a key twice
// replaces the value but keeps its first position.
func (w *Writer) SetKV(key string, v any) error {
	if _, _, err := valueType(v); err != nil {
		return fmt.Errorf("gguf: key %q: %w", key, err)
	}
	if _, ok := w.vals[key]; !ok {
		w.keys = append(w.keys, key)
	}
	w.vals[key] = v
	return nil
}

// AddTensor adds a tensor with ggml-order dims (Dims[0] fastest), encoding
// data (len = product of dims) as typ.
func (w *Writer) AddTensor(name string, typ TensorType, dims []uint64, data []float32) error {
	if w.names[name] {
		return fmt.Errorf("%w: duplicate tensor %q", ErrInvalid, name)
	}
	n := uint64(1)
	for _, d := range dims {
		n *= d
	}
	if len(dims) == 0 || len(dims) > MaxDims || n != uint64(len(data)) {
		return fmt.Errorf("%w: tensor %q: dims %v do not match %d values", ErrInvalid, name, dims, len(data))
	}
	raw, err := encode(typ, data)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", name, err)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, wtensor{name: name, dims: append([]uint64(nil), dims...), typ: typ, data: raw})
	return nil
}

// AddRawTensor adds a tensor whose data is already encoded as typ (for
// types the Writer cannot quantize itself, such as Q4_K and Q6_K). The data
// length must match dims exactly.
func (w *Writer) AddRawTensor(name string, typ TensorType, dims []uint64, raw []byte) error {
	if w.names[name] {
		return fmt.Errorf("%w: duplicate tensor %q", ErrInvalid, name)
	}
	ti := TensorInfo{Name: name, Dims: dims, Type: typ}
	be, bb, ok := typ.blockLayout()
	if !ok {
		return fmt.Errorf("%w: tensor %q type %v", ErrUnsupported, name, typ)
	}
	if len(dims) == 0 || len(dims) > MaxDims || dims[0]%uint64(be) != 0 || ti.Elements()/be*bb != int64(len(raw)) {
		return fmt.Errorf("%w: tensor %q: %d bytes do not fit %v dims %v", ErrInvalid, name, len(raw), typ, dims)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, wtensor{name: name, dims: append([]uint64(nil), dims...), typ: typ, data: append([]byte(nil), raw...)})
	return nil
}

func (w *Writer) alignment() int64 {
	if v, ok := w.vals["general.alignment"]; ok {
		if a, ok := asUint(v); ok && a > 0 {
			return int64(a)
		}
	}
	return DefaultAlignment
}

// WriteTo writes the file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(out, 1<<16)}
	e := &encoder{w: cw}
	align := w.alignment()
	e.raw([]byte(Magic))
	e.u32(Version)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.keys)))
	for _, k := range w.keys {
		e.str(k)
		e.value(w.vals[k], true)
	}
	var off uint64
	offsets := make([]uint64, len(w.tensors))
	for i, t := range w.tensors {
		e.str(t.name)
		e.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			e.u64(d)
		}
		e.u32(uint32(t.typ))
		offsets[i] = off
		e.u64(off)
		off += uint64(len(t.data))
		off = (off + uint64(align) - 1) / uint64(align) * uint64(align)
	}
	pad := func() {
		if r := cw.n % align; r != 0 {
			e.raw(make([]byte, align-r))
		}
	}
	pad()
	for _, t := range w.tensors {
		e.raw(t.data)
		pad()
	}
	if e.err == nil {
		e.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, e.err
}

// WriteFile writes the file to path.
func (w *Writer) WriteFile(path string) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if _, err := w.WriteTo(fh); err != nil {
		fh.Close()
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	return fh.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type encoder struct {
	w   io.Writer
	err error
	buf [8]byte
}

func (e *encoder) raw(p []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
}
func (e *encoder) u8(v uint8)   { e.raw([]byte{v}) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.buf[:], v); e.raw(e.buf[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.buf[:], v); e.raw(e.buf[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.buf[:], v); e.raw(e.buf[:8]) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.raw([]byte(s)) }

// valueType maps a Go value to its GGUF type and, for slices, element type.
func valueType(v any) (ValueType, ValueType, error) {
	switch v.(type) {
	case uint8:
		return TypeUint8, 0, nil
	case int8:
		return TypeInt8, 0, nil
	case uint16:
		return TypeUint16, 0, nil
	case int16:
		return TypeInt16, 0, nil
	case uint32:
		return TypeUint32, 0, nil
	case int32:
		return TypeInt32, 0, nil
	case uint64:
		return TypeUint64, 0, nil
	case int64, int:
		return TypeInt64, 0, nil
	case float32:
		return TypeFloat32, 0, nil
	case float64:
		return TypeFloat64, 0, nil
	case bool:
		return TypeBool, 0, nil
	case string:
		return TypeString, 0, nil
	case []uint8:
		return TypeArray, TypeUint8, nil
	case []int8:
		return TypeArray, TypeInt8, nil
	case []uint16:
		return TypeArray, TypeUint16, nil
	case []int16:
		return TypeArray, TypeInt16, nil
	case []uint32:
		return TypeArray, TypeUint32, nil
	case []int32:
		return TypeArray, TypeInt32, nil
	case []uint64:
		return TypeArray, TypeUint64, nil
	case []int64, []int:
		return TypeArray, TypeInt64, nil
	case []float32:
		return TypeArray, TypeFloat32, nil
	case []float64:
		return TypeArray, TypeFloat64, nil
	case []bool:
		return TypeArray, TypeBool, nil
	case []string:
		return TypeArray, TypeString, nil
	}
	return 0, 0, fmt.Errorf("%w: metadata Go type %T", ErrUnsupported, v)
}

func (e *encoder) value(v any, tagged bool) {
	t, et, err := valueType(v)
	if err != nil {
		e.err = err
		return
	}
	if tagged {
		e.u32(uint32(t))
	}
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case int:
		e.u64(uint64(int64(x)))
	case float32:
		e.u32(math.Float32bits(x))
	case float64:
		e.u64(math.Float64bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(x)
	default:
		e.array(et, v)
	}
}

func (e *encoder) array(et ValueType, v any) {
	e.u32(uint32(et))
	each := func(n int, at func(int) any) {
		e.u64(uint64(n))
		for i := 0; i < n; i++ {
			e.value(at(i), false)
		}
	}
	switch s := v.(type) {
	case []uint8:
		e.u64(uint64(len(s)))
		e.raw(s)
	case []int8:
		each(len(s), func(i int) any { return s[i] })
	case []uint16:
		each(len(s), func(i int) any { return s[i] })
	case []int16:
		each(len(s), func(i int) any { return s[i] })
	case []uint32:
		each(len(s), func(i int) any { return s[i] })
	case []int32:
		each(len(s), func(i int) any { return s[i] })
	case []uint64:
		each(len(s), func(i int) any { return s[i] })
	case []int64:
		each(len(s), func(i int) any { return s[i] })
	case []int:
		each(len(s), func(i int) any { return int64(s[i]) })
	case []float32:
		each(len(s), func(i int) any { return s[i] })
	case []float64:
		each(len(s), func(i int) any { return s[i] })
	case []bool:
		each(len(s), func(i int) any { return s[i] })
	case []string:
		each(len(s), func(i int) any { return s[i] })
	}
}
