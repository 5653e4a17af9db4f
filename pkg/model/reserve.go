package model

import "slices"

// Reserve makes room for the KV of tokens more tokens (capped at the
// context length), so that importing or prefilling them appends without
// reallocating and copying the KV already held. A restore that imports
// a long cached prefix block by block calls it once with the prompt's
// length. It changes no result.
func (s *Sequence) Reserve(tokens int) {
	kd := s.m.cfg.KVDim()
	want := min(s.n+max(0, tokens), s.m.cfg.ContextLen) * kd
	for l := range s.k {
		s.k[l] = slices.Grow(s.k[l], want-len(s.k[l]))
		s.v[l] = slices.Grow(s.v[l], want-len(s.v[l]))
	}
}
