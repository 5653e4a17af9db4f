//go:build amd64 && !purego

package kvblock

import "golang.org/x/sys/cpu"

// Assembly decode loops (decode_amd64.s); decode.go says what each computes
// and checks the lengths before calling them. The counts are in vectors:
// 16 lanes for the AVX512 loops, 8 for the AVX2 ones.

//go:noescape
func int4ChannelsAVX512(y *float32, codes *byte, sf, zf *float32, w16, rows int)

//go:noescape
func int4ChannelsAVX2(y *float32, codes *byte, sf, zf *float32, w8, rows int)

//go:noescape
func int4GroupsAVX512(y *float32, codes *byte, params *byte, groups, g16 int)

//go:noescape
func int4GroupsAVX2(y *float32, codes *byte, params *byte, groups, g8 int)

//go:noescape
func int8RowsAVX512(y *float32, codes *byte, params *byte, rows, d16 int)

//go:noescape
func int8RowsAVX2(y *float32, codes *byte, params *byte, rows, d8 int)

//go:noescape
func f16PairsAVX512(sf, zf *float32, params *byte, n16 int)

//go:noescape
func f16ToF32AVX512(dst *float32, src *byte, n16 int)

//go:noescape
func f16ToF32F16C(dst *float32, src *byte, n8 int)

// decoderSets lists the vector decoders this CPU can run, fastest first.
func decoderSets() []*decoder {
	var ds []*decoder
	x := cpu.X86
	if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasF16C {
		ds = append(ds, &decoder{name: "avx512", lanes: 16, pairs16: true})
	}
	if x.HasAVX2 && x.HasF16C {
		ds = append(ds, &decoder{name: "avx2", lanes: 8})
	}
	return ds
}

func (d *decoder) int4Channels(y *float32, codes *byte, sf, zf *float32, n, rows int) {
	if d.lanes == 16 {
		int4ChannelsAVX512(y, codes, sf, zf, n, rows)
	} else {
		int4ChannelsAVX2(y, codes, sf, zf, n, rows)
	}
}

func (d *decoder) int4Groups(y *float32, codes *byte, params *byte, groups, n int) {
	if d.lanes == 16 {
		int4GroupsAVX512(y, codes, params, groups, n)
	} else {
		int4GroupsAVX2(y, codes, params, groups, n)
	}
}

func (d *decoder) int8Rows(y *float32, codes *byte, params *byte, rows, n int) {
	if d.lanes == 16 {
		int8RowsAVX512(y, codes, params, rows, n)
	} else {
		int8RowsAVX2(y, codes, params, rows, n)
	}
}

func (d *decoder) f16Pairs(sf, zf *float32, params *byte, n16 int) {
	f16PairsAVX512(sf, zf, params, n16)
}

func (d *decoder) f16(dst *float32, src *byte, n int) {
	if d.lanes == 16 {
		f16ToF32AVX512(dst, src, n)
	} else {
		f16ToF32F16C(dst, src, n)
	}
}
