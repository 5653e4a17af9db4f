package kvblock

import (
	"math"
	"os"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

// TestFastConversions checks the fast-path converters against the general
// ones on every f16 and on float32 bit patterns (all of them with
// KVBLOCK_EXHAUSTIVE=1, a stride otherwise).
func TestFastConversions(t *testing.T) {
	step := uint64(7919)
	if os.Getenv("KVBLOCK_EXHAUSTIVE") != "" {
		step = 1
	}
	for i := uint64(0); i < 1<<32; i += step {
		b := uint32(i)
		x := math.Float32frombits(b)
		if f16Normal4(b, b, b, b) && uint16(f16Norm(b)) != half.FromFloat32Sat(x) {
			t.Fatalf("f16Norm(%#x) = %#x, want %#x", b, f16Norm(b), half.FromFloat32Sat(x))
		}
		if a := b & 0x7fffffff; a >= f16MinNormBits && a <= f16MaxBits && !f16Normal4(b, b, b, b) {
			t.Fatalf("f16Normal4(%#x)", b)
		}
		if a := b & 0x7fffffff; a >= 0x3c800000 && a < 0x43e00000 && uint8(e4m3Norm(b)) != e4m3(x) {
			t.Fatalf("e4m3Norm(%#x)", b)
		}
		if b&0x7fffffff < 0x7f7f8000 && uint16(bf16Round(b)) != half.BF16FromFloat32Sat(x) {
			t.Fatalf("bf16Round(%#x)", b)
		}
	}
}
