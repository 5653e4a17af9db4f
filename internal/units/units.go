// Package units parses and prints byte sizes the way operators write them.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

var suffixes = []struct {
	s string
	m float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseBytes parses "20GiB", "512MB", "1.5G" or a plain byte count.
// Binary suffixes (KiB, K) are powers of 1024, decimal ones (KB) of 1000.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, suf := range suffixes {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(suf.s)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(suf.s)]), suf.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("units: %q is not a byte size like 20GiB", s)
	}
	return int64(v * mult), nil
}

// FormatBytes prints n with a binary suffix and up to one decimal.
func FormatBytes(n float64) string {
	abs := n
	if abs < 0 {
		abs = -abs
	}
	for _, u := range []struct {
		s string
		m float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if abs >= u.m {
			return strconv.FormatFloat(n/u.m, 'f', 1, 64) + " " + u.s
		}
	}
	return strconv.FormatFloat(n, 'f', -1, 64) + " B"
}
