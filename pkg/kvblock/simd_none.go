//go:build !goexperiment.simd || !amd64

package kvblock

// Without GOEXPERIMENT=simd the scalar loops are the only implementation;
// the vector entry points below are never called.
const useSIMD = false

func simdGroupKeys(row []float32, vg int, mns, mxs []int32) { panic("unreachable") }
func simdQuantGroups(dst []byte, row []float32, zs, invs []float32, vg, bits int) {
	panic("unreachable")
}
func simdQuantPack(dst []byte, row, zf, inv []float32, bits int)          { panic("unreachable") }
func simdMinmaxRowKeys(kmn, kmx []int32, x []float32, off, stride, n int) { panic("unreachable") }
func simdAbsmaxBits(s []float32) uint32                                   { panic("unreachable") }
func simdQuantInt8(dst []byte, src []float32, inv float32)                { panic("unreachable") }

func vzeroupper() {}

func simdDequantKeys(y []float32, codes []byte, sf, zf []float32, o0, stride, n, rb, bits int) {
	panic("unreachable")
}
func simdDequantValues(y []float32, params, codes []byte, D, vg, rb, bits int) { panic("unreachable") }
