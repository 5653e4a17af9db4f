package model

import "slices"

// Fork returns an independent copy of the sequence: the same tokens and KV,
// after which each can be extended on its own. It is how several
// completions of one prompt share its prefill: compute the prompt once,
// fork, and decode each copy. The copy costs a memory copy of the KV, far
// less than recomputing it, and its results are bit-identical to the
// original's for the same tokens.
func (s *Sequence) Fork() *Sequence {
	c := &Sequence{m: s.m, block: s.block, n: s.n, k: make([][]float32, len(s.k)), v: make([][]float32, len(s.v))}
	kd := s.m.cfg.KVDim()
	for l := range s.k {
		// Copy only the live tokens: Truncate may leave a longer tail.
		c.k[l] = slices.Clone(s.k[l][:min(len(s.k[l]), s.n*kd)])
		c.v[l] = slices.Clone(s.v[l][:min(len(s.v[l]), s.n*kd)])
	}
	return c
}
