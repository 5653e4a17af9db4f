package kvblock

// Vector decoders. On amd64 (unless built with the purego tag) Decode runs
// the int4 keys and values, int8, and the f16 payloads (the f16 codec and
// sink exceptions) through assembly loops, AVX-512 or AVX2+F16C chosen at
// run time (decode_amd64.go), and through the portable loops elsewhere.
// Both compute every value the same way and give the same bits:
//
//	int4: float32(code) * scale, rounded to float32, then + zero, rounded
//	int8: float32(int8(code)) * scale, rounded
//	f16:  the exact float32 of the f16 value (NaNs made quiet)
//
// never with a fused multiply-add (the portable loops convert the product
// to float32 explicitly so the compiler cannot fuse it either). NaN comes
// out where the portable code gives NaN; its payload is not specified when
// both the product and the zero are NaN (the portable code itself returns
// one or the other depending on how the compiler orders the operands of
// its add, which changes under -race). Only the
// regular shapes take the vector loops: channel counts that are a multiple
// of the lane count and rows without padding bits; the rest decode with
// the portable code. The wrappers below check every length against what
// the loop will read and write before calling it, so a hostile block
// cannot make the assembly touch memory outside its slices.

// decoder is one set of vector decode loops (see decode_amd64.go: they
// are called directly, not through function values, so that the compiler
// sees the loops' //go:noescape and the callers' stack buffers stay on the
// stack). Their counts are in units of lanes elements.
type decoder struct {
	name    string
	lanes   int  // 16 (AVX-512) or 8 (AVX2)
	pairs16 bool // has a loop de-interleaving f16 (scale, zero) pairs
}

// decoders lists the vector decoders this CPU runs, fastest first.
var decoders = decoderSets()

// vdec is the decoder Decode uses, nil for the portable code. Tests switch
// it to compare the paths.
var vdec = bestDecoder()

func bestDecoder() *decoder {
	if len(decoders) == 0 {
		return nil
	}
	return decoders[0]
}

// DecoderName reports which decode loops this process uses: "avx512",
// "avx2" or "portable".
func DecoderName() string {
	if vdec == nil {
		return "portable"
	}
	return vdec.name
}

// channels4 decodes rows rows of len(sf) channels (see int4Channels) into
// y, or reports false, having done nothing, when the shape is not one the
// vector loop takes.
func (d *decoder) channels4(y []float32, codes []byte, sf, zf []float32, rows int) bool {
	if d == nil || rows <= 0 {
		return false
	}
	W := len(sf)
	if W == 0 || W%d.lanes != 0 || len(zf) < W || len(y) < rows*W || len(codes) < rows*W/2 {
		return false
	}
	d.int4Channels(&y[0], &codes[0], &sf[0], &zf[0], W/d.lanes, rows)
	return true
}

// groups4 decodes len(y)/vg groups of vg channels (see int4Groups).
func (d *decoder) groups4(y []float32, codes, params []byte, vg int) bool {
	if d == nil || vg <= 0 || vg%d.lanes != 0 || len(y) == 0 || len(y)%vg != 0 {
		return false
	}
	n := len(y) / vg
	if len(codes) < len(y)/2 || len(params) < 4*n {
		return false
	}
	d.int4Groups(&y[0], &codes[0], &params[0], n, vg/d.lanes)
	return true
}

// rows8 decodes len(y)/D int8 rows of D codes (see int8Rows).
func (d *decoder) rows8(y []float32, codes, params []byte, D int) bool {
	if d == nil || D <= 0 || D%d.lanes != 0 || len(y) == 0 || len(y)%D != 0 {
		return false
	}
	rows := len(y) / D
	if len(codes) < len(y) || len(params) < 2*rows {
		return false
	}
	d.int8Rows(&y[0], &codes[0], &params[0], rows, D/d.lanes)
	return true
}

// pairs converts the f16 (scale, zero) pairs of params into sf and zf and
// reports whether it could.
func (d *decoder) pairs(sf, zf []float32, params []byte) bool {
	if d == nil || !d.pairs16 {
		return false
	}
	W := len(sf)
	if W == 0 || W%16 != 0 || len(zf) < W || len(params) < 4*W {
		return false
	}
	d.f16Pairs(&sf[0], &zf[0], &params[0], W/16)
	return true
}

// f16s converts the leading whole vectors of src into dst and returns how
// many values it converted (the caller converts the rest).
func (d *decoder) f16s(dst []float32, src []byte) int {
	if d == nil {
		return 0
	}
	n := min(len(dst), len(src)/2)
	n -= n % d.lanes
	if n == 0 {
		return 0
	}
	d.f16(&dst[0], &src[0], n/d.lanes)
	return n
}
