package model

// Architecture variants layered on the Llama forward pass: qwen2's Q/K/V
// projection biases and Mistral-style sliding-window attention. They sit
// outside the math kernels (matmul.go, attention.go) on purpose: a bias is
// added after the projection, and a window only narrows the keys handed to
// the unchanged attention kernel.

// addBias adds b to each of the n rows of x (row width len(b)). A nil b
// (no bias) is a no-op.
func addBias(x, b []float32, n int) {
	if b == nil {
		return
	}
	w := len(b)
	for r := range n {
		row := x[r*w : (r+1)*w]
		for i, v := range b {
			row[i] += v
		}
	}
}

// attentionWindow is attention (see there) where the query at position p
// sees only keys in [p-window+1, p]; window <= 0 means all keys. Rows whose
// window still reaches position 0 are computed by one kernel call; each
// later row is one call on the key slice starting at its window. The kernel
// is split-invariant (a row's arithmetic depends only on the keys it sees,
// in order), so prefill, chunked prefill and decode stay bit-identical.
func attentionWindow(out, q, kc, vc []float32, p0, n, heads, kvHeads, headDim, window int) {
	full := n
	if window > 0 {
		full = max(0, min(n, window-p0))
	}
	if full > 0 {
		attention(out, q, kc, vc, p0, full, heads, kvHeads, headDim)
	}
	qd, kvDim := heads*headDim, kvHeads*headDim
	for r := full; r < n; r++ {
		lo := p0 + r - window + 1 // first visible key
		attention(out[r*qd:(r+1)*qd], q[r*qd:(r+1)*qd], kc[lo*kvDim:], vc[lo*kvDim:],
			window-1, 1, heads, kvHeads, headDim)
	}
}
