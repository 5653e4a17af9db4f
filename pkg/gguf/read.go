package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// Limits that keep a hostile header from driving huge allocations. Counts
// and lengths are additionally checked against the bytes left in the file.
const (
	maxKeyLen    = 1 << 16
	maxNameLen   = 1 << 10
	maxNestDepth = 3
	maxTypeID    = 64 // ggml type ids above this are certainly garbage
	maxCount     = 1 << 40
)

// File is a parsed GGUF file: metadata and tensor descriptors, with tensor
// data read on demand from the underlying reader. A File is safe for
// concurrent use once returned.
type File struct {
	// Version is the format version from the header (2 or 3).
	Version uint32
	// Alignment is the data alignment (general.alignment or 32).
	Alignment int64
	// DataOffset is the absolute offset of the data section.
	DataOffset int64
	// Size is the total size of the file in bytes.
	Size int64
	// Tensors lists tensor descriptors in file order.
	Tensors []TensorInfo

	keys      []string
	meta      map[string]any
	tensorIdx map[string]int
	r         io.ReaderAt
	closer    io.Closer
}

// Open opens and parses the GGUF file at path. Close releases it.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: open: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: stat: %w", err)
	}
	f, err := Read(fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.closer = fh
	return f, nil
}

// Close closes the underlying file if the File was created by Open.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// Read parses a GGUF file of the given size from r. Tensor data stays in r
// and is read by TensorData, so r must remain valid while the File is used.
func Read(r io.ReaderAt, size int64) (*File, error) {
	d := &decoder{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10), size: size}
	f := &File{Size: size, r: r, meta: map[string]any{}, tensorIdx: map[string]int{}, Alignment: DefaultAlignment}

	var magic [4]byte
	if err := d.read(magic[:], "magic"); err != nil {
		return nil, err
	}
	if string(magic[:]) != Magic {
		return nil, fmt.Errorf("%w: bad magic %q, want %q", ErrInvalid, magic[:], Magic)
	}
	ver, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	if ver != 2 && ver != 3 {
		return nil, fmt.Errorf("%w: version %d (want 2 or 3)", ErrUnsupported, ver)
	}
	f.Version = ver
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Minimal encodings: a KV pair is >= 13 bytes, a tensor info >= 32.
	if err := d.count(nKV, 13, "metadata count"); err != nil {
		return nil, err
	}
	if err := d.count(nTensors, 32, "tensor count"); err != nil {
		return nil, err
	}

	for i := uint64(0); i < nKV; i++ {
		key, err := d.str(maxKeyLen, "metadata key")
		if err != nil {
			return nil, fmt.Errorf("metadata pair %d: %w", i, err)
		}
		if _, dup := f.meta[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrInvalid, key)
		}
		t, err := d.u32("value type")
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		v, err := d.value(ValueType(t), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		f.keys = append(f.keys, key)
		f.meta[key] = v
	}
	if v, ok := f.meta["general.alignment"]; ok {
		a, ok := asUint(v)
		if !ok || a == 0 || a > 1<<16 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%w: general.alignment %v is not a power of two in [1, 65536]", ErrInvalid, v)
		}
		f.Alignment = int64(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		ti, err := d.tensorInfo()
		if err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, err)
		}
		if _, dup := f.tensorIdx[ti.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrInvalid, ti.Name)
		}
		f.tensorIdx[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = (d.pos + f.Alignment - 1) / f.Alignment * f.Alignment
	dataLen := size - f.DataOffset
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		if ti.Offset%uint64(f.Alignment) != 0 {
			return nil, fmt.Errorf("%w: tensor %q offset %d not aligned to %d", ErrInvalid, ti.Name, ti.Offset, f.Alignment)
		}
		if ti.Size < 0 {
			continue // type we cannot decode; TensorData reports it
		}
		if dataLen < 0 || ti.Offset > uint64(dataLen) || uint64(ti.Size) > uint64(dataLen)-ti.Offset {
			return nil, fmt.Errorf("%w: tensor %q data [%d, %d) extends past end of file (data section is %d bytes)",
				ErrTruncated, ti.Name, ti.Offset, ti.Offset+uint64(ti.Size), max(dataLen, 0))
		}
	}
	return f, nil
}

// decoder reads little-endian primitives while tracking the position and
// refusing to read past the declared size.
type decoder struct {
	br   *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
}

func (d *decoder) remaining() int64 { return d.size - d.pos }

func (d *decoder) read(p []byte, what string) error {
	if int64(len(p)) > d.remaining() {
		return fmt.Errorf("%w: reading %s (%d bytes) at offset %d of %d", ErrTruncated, what, len(p), d.pos, d.size)
	}
	if _, err := io.ReadFull(d.br, p); err != nil {
		return fmt.Errorf("%w: reading %s at offset %d: %v", ErrTruncated, what, d.pos, err)
	}
	d.pos += int64(len(p))
	return nil
}

// count checks that n items of at least minSize bytes each can fit in the
// rest of the file: absurd counts are ErrInvalid, merely too many for the
// bytes left is ErrTruncated.
func (d *decoder) count(n uint64, minSize int64, what string) error {
	if n > maxCount {
		return fmt.Errorf("%w: %s %d is absurd", ErrInvalid, what, n)
	}
	if n > uint64(d.remaining()/minSize) {
		return fmt.Errorf("%w: %s %d cannot fit in %d remaining bytes", ErrTruncated, what, n, d.remaining())
	}
	return nil
}

func (d *decoder) u32(what string) (uint32, error) {
	if err := d.read(d.buf[:4], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(d.buf[:4]), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	if err := d.read(d.buf[:8], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(d.buf[:8]), nil
}

func (d *decoder) str(limit int64, what string) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(limit) {
		return "", fmt.Errorf("%w: %s length %d exceeds limit %d", ErrInvalid, what, n, limit)
	}
	if n > uint64(d.remaining()) {
		return "", fmt.Errorf("%w: %s length %d exceeds %d remaining bytes", ErrTruncated, what, n, d.remaining())
	}
	b := make([]byte, n)
	if err := d.read(b, what); err != nil {
		return "", err
	}
	return string(b), nil
}

// scalarSize returns the encoded size of a fixed-size value type.
func scalarSize(t ValueType) int64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

func (d *decoder) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeString:
		return d.str(d.remaining(), "string")
	case TypeArray:
		return d.array(depth)
	}
	sz := scalarSize(t)
	if sz == 0 {
		return nil, fmt.Errorf("%w: metadata value type %d", ErrUnsupported, t)
	}
	if err := d.read(d.buf[:sz], "value"); err != nil {
		return nil, err
	}
	return scalar(t, d.buf[:sz])
}

func scalar(t ValueType, b []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("%w: bool value %d", ErrInvalid, b[0])
		}
		return b[0] == 1, nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, fmt.Errorf("%w: metadata value type %d", ErrUnsupported, t)
}

func (d *decoder) array(depth int) (any, error) {
	if depth >= maxNestDepth {
		return nil, fmt.Errorf("%w: arrays nested deeper than %d", ErrUnsupported, maxNestDepth)
	}
	et, err := d.u32("array type")
	if err != nil {
		return nil, err
	}
	n, err := d.u64("array length")
	if err != nil {
		return nil, err
	}
	t := ValueType(et)
	minSize := scalarSize(t)
	switch t {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return nil, fmt.Errorf("%w: array element type %d", ErrUnsupported, et)
	}
	if err := d.count(n, minSize, "array length"); err != nil {
		return nil, err
	}
	switch t {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = d.str(d.remaining(), "array string"); err != nil {
				return nil, err
			}
		}
		return out, nil
	case TypeArray:
		out := make([]any, n)
		for i := range out {
			if out[i], err = d.array(depth + 1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	raw := make([]byte, n*uint64(minSize))
	if err := d.read(raw, "array data"); err != nil {
		return nil, err
	}
	return typedSlice(t, raw, int(n))
}

func typedSlice(t ValueType, raw []byte, n int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return raw, nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, fmt.Errorf("%w: bool value %d", ErrInvalid, raw[i])
			}
			out[i] = raw[i] == 1
		}
		return out, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out, nil
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: array element type %d", ErrUnsupported, t)
}

func (d *decoder) tensorInfo() (TensorInfo, error) {
	var ti TensorInfo
	name, err := d.str(maxNameLen, "tensor name")
	if err != nil {
		return ti, err
	}
	ti.Name = name
	nd, err := d.u32("tensor dims")
	if err != nil {
		return ti, fmt.Errorf("tensor %q: %w", name, err)
	}
	if nd == 0 || nd > MaxDims {
		return ti, fmt.Errorf("%w: tensor %q has %d dims (want 1..%d)", ErrInvalid, name, nd, MaxDims)
	}
	ti.Dims = make([]uint64, nd)
	elems := uint64(1)
	for i := range ti.Dims {
		if ti.Dims[i], err = d.u64("tensor dim"); err != nil {
			return ti, fmt.Errorf("tensor %q: %w", name, err)
		}
		if ti.Dims[i] == 0 || ti.Dims[i] > 1<<40 || elems > (1<<50)/ti.Dims[i] {
			return ti, fmt.Errorf("%w: tensor %q has absurd shape %v", ErrInvalid, name, ti.Dims[:i+1])
		}
		elems *= ti.Dims[i]
	}
	typ, err := d.u32("tensor type")
	if err != nil {
		return ti, fmt.Errorf("tensor %q: %w", name, err)
	}
	if typ >= maxTypeID {
		return ti, fmt.Errorf("%w: tensor %q has unknown type id %d", ErrInvalid, name, typ)
	}
	ti.Type = TensorType(typ)
	if ti.Offset, err = d.u64("tensor offset"); err != nil {
		return ti, fmt.Errorf("tensor %q: %w", name, err)
	}
	ti.Size = -1
	if be, bb, ok := ti.Type.blockLayout(); ok {
		if ti.Dims[0]%uint64(be) != 0 {
			return ti, fmt.Errorf("%w: tensor %q row length %d is not a multiple of the %v block size %d", ErrInvalid, name, ti.Dims[0], ti.Type, be)
		}
		ti.Size = int64(elems) / be * bb
	}
	return ti, nil
}
