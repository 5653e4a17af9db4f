package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

func testFile(t testing.TB) []byte {
	t.Helper()
	w := NewWriter()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.SetKV("general.architecture", "llama"))
	must(w.SetKV("llama.block_count", uint32(2)))
	must(w.SetKV("llama.rope.freq_base", float32(10000)))
	must(w.SetKV("some.int64", int64(-5)))
	must(w.SetKV("some.bool", true))
	must(w.SetKV("tokenizer.ggml.tokens", []string{"a", "b", "<0x0A>"}))
	must(w.SetKV("tokenizer.ggml.scores", []float32{0.5, -1, 0}))
	must(w.SetKV("tokenizer.ggml.token_type", []int32{1, 1, 6}))
	data := make([]float32, 64)
	for i := range data {
		data[i] = float32(i)/8 - 4
	}
	must(w.AddTensor("a.f32", F32, []uint64{32, 2}, data))
	must(w.AddTensor("b.f16", F16, []uint64{64}, data))
	must(w.AddTensor("c.bf16", BF16, []uint64{64}, data))
	must(w.AddTensor("d.q8", Q8_0, []uint64{32, 2}, data))
	must(w.AddTensor("e.q4", Q4_0, []uint64{64}, data))
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	raw := testFile(t)
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s, err := f.String("general.architecture"); err != nil || s != "llama" {
		t.Errorf("architecture = %q, %v", s, err)
	}
	if n, err := f.Uint("llama.block_count"); err != nil || n != 2 {
		t.Errorf("block_count = %d, %v", n, err)
	}
	if v, err := f.Float("llama.rope.freq_base"); err != nil || v != 10000 {
		t.Errorf("freq_base = %v, %v", v, err)
	}
	if _, err := f.Uint("some.int64"); !errors.Is(err, ErrType) {
		t.Errorf("negative Uint: err = %v, want ErrType", err)
	}
	if _, err := f.String("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing key: err = %v", err)
	}
	if b, err := f.Bool("some.bool"); err != nil || !b {
		t.Errorf("bool = %v, %v", b, err)
	}
	if s, err := f.Strings("tokenizer.ggml.tokens"); err != nil || strings.Join(s, ",") != "a,b,<0x0A>" {
		t.Errorf("tokens = %v, %v", s, err)
	}
	if s, err := f.Ints("tokenizer.ggml.token_type"); err != nil || len(s) != 3 || s[2] != 6 {
		t.Errorf("token_type = %v, %v", s, err)
	}
	want := make([]float32, 64)
	for i := range want {
		want[i] = float32(i)/8 - 4
	}
	tests := []struct {
		name string
		tol  float64
	}{{"a.f32", 0}, {"b.f16", 0}, {"c.bf16", 0}, {"d.q8", 0.02}, {"e.q4", 0.3}}
	for _, tc := range tests {
		got, err := f.TensorData(tc.name)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > tc.tol {
				t.Fatalf("%s[%d] = %v, want %v ± %v", tc.name, i, got[i], want[i], tc.tol)
			}
		}
	}
	if _, err := f.TensorData("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
}

// patchTensor returns a copy of raw with the tensor info of name modified:
// field is "ndims", "dim0", "type" or "offset".
func patchTensor(t *testing.T, raw []byte, name, field string, v uint64) []byte {
	t.Helper()
	out := bytes.Clone(raw)
	i := bytes.Index(out, []byte(name))
	if i < 0 {
		t.Fatalf("tensor %q not found", name)
	}
	p := i + len(name)
	nd := int(binary.LittleEndian.Uint32(out[p:]))
	le := binary.LittleEndian
	switch field {
	case "ndims":
		le.PutUint32(out[p:], uint32(v))
	case "dim0":
		le.PutUint64(out[p+4:], v)
	case "type":
		le.PutUint32(out[p+4+8*nd:], uint32(v))
	case "offset":
		le.PutUint64(out[p+8+8*nd:], v)
	}
	return out
}

func TestBadFiles(t *testing.T) {
	good := testFile(t)
	le := binary.LittleEndian
	set := func(off int, v uint64, size int) []byte {
		b := bytes.Clone(good)
		if size == 4 {
			le.PutUint32(b[off:], uint32(v))
		} else {
			le.PutUint64(b[off:], v)
		}
		return b
	}
	// First metadata key length is at offset 24.
	tests := []struct {
		name    string
		data    []byte
		wantErr error
		mention string
	}{
		{"empty", nil, ErrTruncated, "magic"},
		{"bad magic", append([]byte("GGUX"), good[4:]...), ErrInvalid, "magic"},
		{"version", set(4, 7, 4), ErrUnsupported, "version 7"},
		{"huge tensor count", set(8, 1<<60, 8), ErrInvalid, "tensor count"},
		{"huge kv count", set(16, 1<<62, 8), ErrInvalid, "metadata count"},
		{"huge key length", set(24, 1<<40, 8), ErrInvalid, "key length"},
		{"bad value type", set(24+8+len("general.architecture"), 99, 4), ErrUnsupported, "value type 99"},
		{"unknown tensor type", patchTensor(t, good, "a.f32", "type", 999), ErrInvalid, "unknown type"},
		{"zero dims", patchTensor(t, good, "a.f32", "ndims", 0), ErrInvalid, "dims"},
		{"absurd dim", patchTensor(t, good, "a.f32", "dim0", 1<<62), ErrInvalid, "absurd shape"},
		{"data past EOF", patchTensor(t, good, "e.q4", "offset", 1<<20), ErrTruncated, "past end of file"},
		{"misaligned", patchTensor(t, good, "e.q4", "offset", 3), ErrInvalid, "not aligned"},
		{"q8 row not block multiple", patchTensor(t, good, "d.q8", "dim0", 16), ErrInvalid, "block size"},
		{"truncated data", good[:len(good)-40], ErrTruncated, `"e.q4"`},
		{"truncated header", good[:100], ErrTruncated, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestEveryTruncationFails(t *testing.T) {
	good := testFile(t)
	f, err := Read(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	last := f.Tensors[len(f.Tensors)-1]
	end := int(f.DataOffset + int64(last.Offset) + last.Size)
	for n := 0; n < end; n++ {
		if _, err := Read(bytes.NewReader(good[:n]), int64(n)); err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed without error", n, end)
		}
	}
}

func TestUnsupportedTensorType(t *testing.T) {
	raw := patchTensor(t, testFile(t), "e.q4", "type", 10) // Q2_K
	f, err := Read(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.TensorData("e.q4"); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "type(10)") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(testFile(f))
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ti := range file.Tensors {
			out, err := file.TensorData(ti.Name)
			if err == nil && int64(len(out)) > 8*int64(len(data)) {
				t.Fatalf("tensor %q decoded to %d values from %d bytes", ti.Name, len(out), len(data))
			}
		}
	})
}

func TestKQuants(t *testing.T) {
	le := binary.LittleEndian
	// Q4_K: d=1, dmin=0.5; sub-blocks 0..3 have scale j+1 and min 0;
	// sub-blocks 4..7 have scale 1 (low nibble) and min 2 (high nibble).
	q4 := make([]byte, 144)
	le.PutUint16(q4, half.FromFloat32(1))
	le.PutUint16(q4[2:], half.FromFloat32(0.5))
	for j := 0; j < 4; j++ {
		q4[4+j] = byte(j + 1)
		q4[4+j+4] = 0
		q4[4+8+j] = 0x21
	}
	for i := range q4[16:] {
		q4[16+i] = byte(i%16) | byte(15-i%16)<<4
	}
	// Q6_K: d=0.5, scales 1..16; first ql/qh bytes set.
	q6 := make([]byte, 210)
	le.PutUint16(q6[208:], half.FromFloat32(0.5))
	for i := 0; i < 16; i++ {
		q6[192+i] = byte(i + 1)
	}
	q6[0] = 0x3A   // ql[0]: low 0xA (elem 0), high 0x3 (elem 64)
	q6[32] = 0x5C  // ql[32]: low 0xC (elem 32), high 0x5 (elem 96)
	q6[128] = 0xE4 // qh[0]: bits 0b11_10_01_00 -> elems 0,32,64,96 get 0,1,2,3
	q6[64] = 0x07  // ql[64]: elem 128 low nibble
	w := NewWriter()
	if err := w.AddRawTensor("q4k", Q4_K, []uint64{256}, q4); err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawTensor("q6k", Q6_K, []uint64{256}, q6); err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawTensor("bad", Q6_K, []uint64{256}, q6[:100]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short raw tensor: %v", err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	got4, err := f.TensorData("q4k")
	if err != nil {
		t.Fatal(err)
	}
	// Element index -> (group g, l): byte qs[32g+l] = l%16 | (15-l%16)<<4
	// (since 32g+l ≡ l mod 16).
	want4 := map[int]float32{
		0:   1 * 0,             // g0 low, scale 1
		5:   1 * 5,             // g0 low
		33:  2 * 14,            // g0 high (sub-block 1, scale 2): 15-1
		64:  3 * 0,             // g1 low (sub-block 2, scale 3)
		100: 4 * (15 - 4),      // g1 high (sub-block 3, scale 4): l=4
		130: 1*2 - 0.5*2,       // g2 low (sub-block 4, scale 1, min 2): l=2
		255: 1*(15-15) - 0.5*2, // g3 high (sub-block 7): l=31 -> 15-15
	}
	for i, w := range want4 {
		if got4[i] != w {
			t.Errorf("Q4_K[%d] = %v, want %v", i, got4[i], w)
		}
	}
	got6, err := f.TensorData("q6k")
	if err != nil {
		t.Fatal(err)
	}
	want6 := map[int]float32{
		0:   0.5 * 1 * float32(0xA|0<<4-32),
		32:  0.5 * 3 * float32(0xC|1<<4-32),
		64:  0.5 * 5 * float32(0x3|2<<4-32),
		96:  0.5 * 7 * float32(0x5|3<<4-32),
		16:  0.5 * 2 * float32(-32),
		128: 0.5 * 9 * float32(0x7-32),
	}
	for i, w := range want6 {
		if got6[i] != w {
			t.Errorf("Q6_K[%d] = %v, want %v", i, got6[i], w)
		}
	}
}
