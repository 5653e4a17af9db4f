package plots

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// svgTexts parses an SVG and returns the content of its <text> elements:
// the title, axis labels, tick labels, legend and point labels.
func svgTexts(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(raw))
	var texts []string
	var root string
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not valid XML: %v", path, err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			inText = el.Name.Local == "text"
		case xml.CharData:
			if inText {
				texts = append(texts, strings.TrimSpace(string(el)))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	return texts
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: not a PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 200 || b.Dy() < 100 {
		t.Errorf("%s: %v is too small to read", path, b)
	}
}

func TestWriteChartsAsPNGAndSVG(t *testing.T) {
	tests := []struct {
		chart Chart
		want  []string // texts the SVG must contain: legend entries, labels
	}{
		{TTFT([]Point{{128, 900}, {256, 1800}, {512, 3600}}, []Point{{128, 80}, {256, 95}, {512, 120}}),
			[]string{"TTFT, cache hit vs miss", SeriesMiss, SeriesHit, "128", "256", "512"}}, // a tick at each length
		{HitRatio([]Point{{0.5, 0}, {1, 40}, {2, 60}}, []Point{{0.5, 0}, {1, 80}, {2, 95}}),
			[]string{"Cache hit ratio over the demo", SeriesCumulative, SeriesPerRequest}},
		{Fetch(Series{Name: "kvcache", Points: []Point{{65536, 1.2}, {1 << 20, 2.4}}},
			Series{Name: "redis MGET", Points: []Point{{65536, 0.9}, {1 << 20, 1.3}}}),
			[]string{"Fetch throughput by block size", "kvcache", "redis MGET", "64 KiB", "1 MiB"}},
		{Fidelity([]CodecFidelity{
			{Codec: "f16", BytesPerToken: 131072, AttentionCosine: 1, LogitCosine: 1, GreedyAgreement: 1},
			{Codec: "int8", BytesPerToken: 66560, AttentionCosine: 0.9999, LogitCosine: 0.99999, GreedyAgreement: 0.996},
			{Codec: "int2", BytesPerToken: 24576, AttentionCosine: 0.88, LogitCosine: math.NaN(), GreedyAgreement: math.NaN()},
		}), []string{SeriesAttention, SeriesLogit, SeriesGreedy, "f16", "int8", "int2"}},
	}
	dir := filepath.Join(t.TempDir(), "plots") // Write creates it
	for _, tt := range tests {
		t.Run(tt.chart.File, func(t *testing.T) {
			paths, err := Write(dir, tt.chart)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{filepath.Join(dir, tt.chart.File+".png"), filepath.Join(dir, tt.chart.File+".svg")}
			if !slices.Equal(paths, want) {
				t.Fatalf("paths %v, want %v", paths, want)
			}
			checkPNG(t, paths[0])
			texts := svgTexts(t, paths[1])
			for _, w := range append(tt.want, tt.chart.XLabel, tt.chart.YLabel) {
				if !slices.Contains(texts, w) {
					t.Errorf("SVG has no text %q; texts: %q", w, texts)
				}
			}
			if fi, err := os.Stat(paths[1]); err != nil || fi.Size() > 256<<10 {
				t.Errorf("SVG size %v (%v), want well under 1 MiB for docs/img", fi.Size(), err)
			}
		})
	}
}

func TestFidelitySkipsUnmeasured(t *testing.T) {
	c := Fidelity([]CodecFidelity{
		{Codec: "int8", BytesPerToken: 2048, AttentionCosine: 0.999, LogitCosine: math.NaN(), GreedyAgreement: math.NaN()},
		{Codec: "int4", BytesPerToken: 1024, AttentionCosine: 0.98, LogitCosine: math.NaN(), GreedyAgreement: math.NaN()},
	})
	if len(c.Series) != 1 || c.Series[0].Name != SeriesAttention {
		t.Fatalf("series %+v, want only %q", c.Series, SeriesAttention)
	}
	s := c.Series[0]
	if !slices.Equal(s.Labels, []string{"int8", "int4"}) || s.Points[0] != (Point{2, 0.999}) || s.Points[1] != (Point{1, 0.98}) {
		t.Errorf("attention series %+v: want KiB per token against cosine, labelled by codec", s)
	}
}

func TestWriteRejectsInvalidCharts(t *testing.T) {
	ok := []Point{{1, 1}}
	tests := []struct {
		name  string
		chart Chart
	}{
		{"no points", Chart{File: "a", Series: []Series{{Name: "s"}}}},
		{"no series", Chart{File: "a"}},
		{"NaN", Chart{File: "a", Series: []Series{{Name: "s", Points: []Point{{1, math.NaN()}}}}}},
		{"Inf", Chart{File: "a", Series: []Series{{Name: "s", Points: []Point{{math.Inf(1), 1}}}}}},
		{"zero on log axis", Chart{File: "a", LogX: true, Series: []Series{{Name: "s", Points: []Point{{0, 1}}}}}},
		{"labels mismatch", Chart{File: "a", Series: []Series{{Name: "s", Points: ok, Labels: []string{"x", "y"}}}}},
		{"no file name", Chart{Series: []Series{{Name: "s", Points: ok}}}},
		{"file name with a directory", Chart{File: "../a", Series: []Series{{Name: "s", Points: ok}}}},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Write(dir, tt.chart); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("invalid charts wrote files: %v", entries)
	}
}

func TestWriteAllNamesEveryFile(t *testing.T) {
	dir := t.TempDir()
	paths, err := WriteAll(dir,
		TTFT([]Point{{100, 10}}, []Point{{100, 1}}),
		HitRatio([]Point{{1, 50}}, []Point{{1, 50}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 4 {
		t.Fatalf("paths %v, want 4", paths)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
}
