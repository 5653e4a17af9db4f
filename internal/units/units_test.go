package units

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"20GiB", 20 << 30, false}, {"512MB", 512e6, false}, {"1.5G", 3 << 29, false},
		{"4096", 4096, false}, {"64 KiB", 64 << 10, false}, {"10b", 10, false},
		{"", 0, true}, {"-1G", 0, true}, {"GiB", 0, true}, {"1e30", 0, true},
	} {
		got, err := ParseBytes(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[float64]string{131072: "128.0 KiB", 100: "100 B", 3 << 30: "3.0 GiB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%v) = %q, want %q", in, got, want)
		}
	}
}
