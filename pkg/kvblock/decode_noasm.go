//go:build !amd64 || purego

package kvblock

// Without the assembly loops every codec decodes with the portable code:
// there is no decoder, so the methods below are never called.
func decoderSets() []*decoder { return nil }

func (d *decoder) int4Channels(y *float32, codes *byte, sf, zf *float32, n, rows int) {
	panic("unreachable")
}
func (d *decoder) int4Groups(y *float32, codes *byte, params *byte, groups, n int) {
	panic("unreachable")
}
func (d *decoder) int8Rows(y *float32, codes *byte, params *byte, rows, n int) {
	panic("unreachable")
}
func (d *decoder) f16Pairs(sf, zf *float32, params *byte, n16 int) { panic("unreachable") }
func (d *decoder) f16(dst *float32, src *byte, n int)              { panic("unreachable") }
