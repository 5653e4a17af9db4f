package gguf

import (
	"fmt"
	"math"
)

// Keys returns the metadata keys in file order.
func (f *File) Keys() []string { return append([]string(nil), f.keys...) }

// Value returns the raw metadata value for key. Scalars are the Go type
// matching the GGUF type (uint32, float32, string, bool, ...); arrays are
// typed slices ([]string, []float32, []int32, ...) or []any when nested.
// Callers must not modify returned slices.
func (f *File) Value(key string) (any, bool) {
	v, ok := f.meta[key]
	return v, ok
}

func (f *File) get(key string) (any, error) {
	v, ok := f.meta[key]
	if !ok {
		return nil, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	return v, nil
}

// String returns a string metadata value.
func (f *File) String(key string) (string, error) {
	v, err := f.get(key)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: %q is %T, want string", ErrType, key, v)
	}
	return s, nil
}

// Uint returns a non-negative integer metadata value of any integer type.
func (f *File) Uint(key string) (uint64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	u, ok := asUint(v)
	if !ok {
		return 0, fmt.Errorf("%w: %q is %T %v, want a non-negative integer", ErrType, key, v, v)
	}
	return u, nil
}

// Float returns a numeric metadata value (float or integer) as float64.
func (f *File) Float(key string) (float64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	if i, ok := asInt(v); ok {
		return float64(i), nil
	}
	return 0, fmt.Errorf("%w: %q is %T, want a number", ErrType, key, v)
}

// Bool returns a bool metadata value.
func (f *File) Bool(key string) (bool, error) {
	v, err := f.get(key)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%w: %q is %T, want bool", ErrType, key, v)
	}
	return b, nil
}

// Strings returns a string-array metadata value.
func (f *File) Strings(key string) ([]string, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.([]string)
	if !ok {
		return nil, fmt.Errorf("%w: %q is %T, want []string", ErrType, key, v)
	}
	return s, nil
}

// Float32s returns a float32-array metadata value.
func (f *File) Float32s(key string) ([]float32, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.([]float32)
	if !ok {
		return nil, fmt.Errorf("%w: %q is %T, want []float32", ErrType, key, v)
	}
	return s, nil
}

// Ints returns an integer-array metadata value of any integer element type.
func (f *File) Ints(key string) ([]int64, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	var out []int64
	conv := func(n int, at func(int) int64) []int64 {
		out = make([]int64, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	switch s := v.(type) {
	case []uint8:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []int8:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []uint16:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []int16:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []uint32:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []int32:
		return conv(len(s), func(i int) int64 { return int64(s[i]) }), nil
	case []int64:
		return append([]int64(nil), s...), nil
	case []uint64:
		return conv(len(s), func(i int) int64 { return int64(min(s[i], math.MaxInt64)) }), nil
	}
	return nil, fmt.Errorf("%w: %q is %T, want an integer array", ErrType, key, v)
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

func asUint(v any) (uint64, bool) {
	if x, ok := v.(uint64); ok {
		return x, true
	}
	i, ok := asInt(v)
	if !ok || i < 0 {
		return 0, false
	}
	return uint64(i), true
}

// Tensor returns the descriptor of the named tensor.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensorIdx[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorData reads the named tensor and dequantizes it to float32, in ggml
// element order (Dims[0] fastest).
func (f *File) TensorData(name string) ([]float32, error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %q", ErrNotFound, name)
	}
	if ti.Size < 0 {
		return nil, fmt.Errorf("%w: tensor %q has type %v", ErrUnsupported, name, ti.Type)
	}
	raw := make([]byte, ti.Size)
	if _, err := f.r.ReadAt(raw, f.DataOffset+int64(ti.Offset)); err != nil {
		return nil, fmt.Errorf("%w: reading tensor %q: %v", ErrTruncated, name, err)
	}
	out := make([]float32, ti.Elements())
	if err := decode(ti.Type, raw, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}
