package worker

import (
	"math"
	"strings"
	"testing"
)

func TestTextState(t *testing.T) {
	euro := "€" // 3 bytes
	tests := []struct {
		name     string
		stops    []string
		pushes   []string
		want     []string // released by each push
		stopped  int      // index of the push that finds a stop; -1 none
		flushed  string
		textLen  int
		returned string
	}{
		{"no stops", nil, []string{"a", "b"}, []string{"a", "b"}, -1, "", 2, "ab"},
		{"split character", nil, []string{"a", euro[:1], euro[1:2], euro[2:]}, []string{"a", "", "", euro}, -1, "", 4, "a" + euro},
		{"incomplete at end", nil, []string{euro[:2]}, []string{""}, -1, euro[:2], 2, euro[:2]},
		{"invalid passes", nil, []string{"\xff", "a"}, []string{"\xff", "a"}, -1, "", 2, "\xffa"},
		{"stop in one token", []string{"END"}, []string{"abENDcd"}, []string{"ab"}, 0, "", 2, "ab"},
		{"stop across tokens", []string{"END"}, []string{"xE", "N", "Dy"}, []string{"x", "", ""}, 2, "", 1, "x"},
		{"prefix then no stop", []string{"END"}, []string{"xE", "N", "o"}, []string{"x", "", "ENo"}, -1, "", 4, "xENo"},
		{"prefix held at the end", []string{"END"}, []string{"xEN"}, []string{"x"}, -1, "EN", 3, "xEN"},
		{"earliest of two", []string{"cd", "b"}, []string{"abcd"}, []string{"a"}, 0, "", 1, "a"},
		{"overlapping prefixes", []string{"aab"}, []string{"a", "a", "a", "b"}, []string{"", "", "a", ""}, 3, "", 1, "a"},
		{"stop after multibyte", []string{euro + "!"}, []string{"x" + euro[:2], euro[2:], "!"}, []string{"x", "", ""}, 2, "", 1, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTextState(tt.stops)
			var out strings.Builder
			stoppedAt := -1
			for i, p := range tt.pushes {
				got, stopped := s.push([]byte(p))
				out.WriteString(got)
				if got != tt.want[i] {
					t.Errorf("push %d (%q): released %q, want %q", i, p, got, tt.want[i])
				}
				if stopped {
					stoppedAt = i
					break
				}
			}
			if stoppedAt != tt.stopped {
				t.Fatalf("stopped at push %d, want %d", stoppedAt, tt.stopped)
			}
			if stoppedAt < 0 {
				if f := s.flush(); f != tt.flushed {
					t.Errorf("flush %q, want %q", f, tt.flushed)
				} else {
					out.WriteString(f)
				}
			}
			if out.String() != tt.returned || s.textLen() != tt.textLen {
				t.Errorf("returned %q (len %d), want %q (len %d)", out.String(), s.textLen(), tt.returned, tt.textLen)
			}
		})
	}
}

func TestLogprobOf(t *testing.T) {
	logits := []float32{1, 3, 2, 3, -1}
	lp, top := logprobOf(logits, 2, 3)
	// log-softmax: logits - log(sum(exp)).
	var sum float64
	for _, v := range logits {
		sum += expf(v)
	}
	if want := 2 - logf(sum); abs(lp-want) > 1e-12 {
		t.Errorf("logprob %g, want %g", lp, want)
	}
	if len(top) != 3 || top[0].Token != 1 || top[1].Token != 3 || top[2].Token != 2 {
		t.Errorf("top %v, want tokens 1, 3 (ties keep order), 2", top)
	}
	if _, none := logprobOf(logits, 0, 0); none != nil {
		t.Errorf("k=0 gave %v", none)
	}
}

func expf(v float32) float64 { return math.Exp(float64(v)) }
func logf(v float64) float64 { return math.Log(v) }
func abs(v float64) float64  { return math.Abs(v) }
