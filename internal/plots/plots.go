// Package plots draws the charts of kvdemo and kvbench with
// gonum.org/v1/plot, each written as PNG (to look at) and SVG (to embed in
// docs/). A Chart is plain data, so the commands build it from what they
// measured and a test can check its series without looking at pixels.
package plots

import (
	"cmp"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Point is one measurement.
type Point struct{ X, Y float64 }

// Series is one named set of points: one legend entry.
type Series struct {
	Name   string
	Points []Point
	// Labels, when set, has one label per point, drawn beside it (the
	// codec of a fidelity point, for example).
	Labels []string
	// Line joins the points in order; without it they are a scatter.
	Line bool
}

// Chart is one figure.
type Chart struct {
	// File is the base name of the files: File.png and File.svg.
	File                  string
	Title, XLabel, YLabel string
	// LogX scales the x axis logarithmically (block sizes, prefix lengths)
	// and puts a tick at every x of the data, labelled by XTick (nil: %g).
	LogX  bool
	XTick func(x float64) string
	// YMin, YMax fix the y range when YMax > YMin; otherwise it fits the data.
	YMin, YMax float64
	// The legend sits top right unless moved clear of the data.
	LegendLeft, LegendBottom bool
	Series                   []Series
}

// Size of the figures; SVGs of this size are a few tens of KiB.
const (
	width  = 16 * vg.Centimeter
	height = 10 * vg.Centimeter
)

// ErrInvalid reports a chart that cannot be drawn (no data, a point that
// is not finite, a non-positive x on a log axis).
var ErrInvalid = errors.New("plots: invalid chart")

// Write draws c into dir as File.png and File.svg, creating dir, and
// returns the paths written.
func Write(dir string, c Chart) ([]string, error) {
	p, err := c.plot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, ext := range []string{".png", ".svg"} {
		path := filepath.Join(dir, c.File+ext)
		if err := p.Save(width, height, path); err != nil {
			return paths, fmt.Errorf("plots: %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// WriteAll writes every chart and returns every path written.
func WriteAll(dir string, charts ...Chart) ([]string, error) {
	var all []string
	for _, c := range charts {
		paths, err := Write(dir, c)
		all = append(all, paths...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

func (c Chart) check() error {
	if c.File == "" || filepath.Base(c.File) != c.File {
		return fmt.Errorf("%w: file name %q", ErrInvalid, c.File)
	}
	n := 0
	for _, s := range c.Series {
		if s.Labels != nil && len(s.Labels) != len(s.Points) {
			return fmt.Errorf("%w: %s: series %q has %d labels for %d points", ErrInvalid, c.File, s.Name, len(s.Labels), len(s.Points))
		}
		for _, pt := range s.Points {
			if !finite(pt.X) || !finite(pt.Y) {
				return fmt.Errorf("%w: %s: series %q has point (%v, %v)", ErrInvalid, c.File, s.Name, pt.X, pt.Y)
			}
			if c.LogX && pt.X <= 0 {
				return fmt.Errorf("%w: %s: series %q has x = %v on a log axis", ErrInvalid, c.File, s.Name, pt.X)
			}
		}
		n += len(s.Points)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s: no points", ErrInvalid, c.File)
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func (c Chart) plot() (*plot.Plot, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = !c.LegendBottom, c.LegendLeft
	if c.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = c.dataTicks()
	}
	for i, s := range c.Series {
		if len(s.Points) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(s.Points))
		for j, pt := range s.Points {
			xys[j].X, xys[j].Y = pt.X, pt.Y
		}
		col := plotutil.Color(i)
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return nil, fmt.Errorf("plots: %s: %w", c.File, err)
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(3), Shape: plotutil.Shape(i)}
		thumbs := []plot.Thumbnailer{sc}
		p.Add(sc)
		if s.Line && len(xys) > 1 {
			ln, err := plotter.NewLine(xys)
			if err != nil {
				return nil, fmt.Errorf("plots: %s: %w", c.File, err)
			}
			ln.LineStyle.Color, ln.LineStyle.Width = col, vg.Points(1.5)
			p.Add(ln)
			thumbs = append(thumbs, ln)
		}
		if s.Labels != nil {
			if err := addLabels(p, xys, s.Labels); err != nil {
				return nil, fmt.Errorf("plots: %s: %w", c.File, err)
			}
		}
		p.Legend.Add(s.Name, thumbs...)
	}
	if c.YMax > c.YMin {
		p.Y.Min, p.Y.Max = c.YMin, c.YMax
	}
	return p, nil
}

// dataTicks labels every distinct x of the data: a log axis over less
// than a decade would otherwise have no labelled tick at all.
func (c Chart) dataTicks() plot.ConstantTicks {
	label := c.XTick
	if label == nil {
		label = func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	}
	var xs []float64
	for _, s := range c.Series {
		for _, pt := range s.Points {
			xs = append(xs, pt.X)
		}
	}
	slices.Sort(xs)
	var ticks plot.ConstantTicks
	for _, x := range slices.Compact(xs) {
		ticks = append(ticks, plot.Tick{Value: x, Label: label(x)})
	}
	return ticks
}

// addLabels writes each label beside its point, alternately above and
// below in order of x, so that neighbours (f16 and bf16 share a point,
// fp8 and int8 nearly do) stay readable.
func addLabels(p *plot.Plot, xys plotter.XYs, labels []string) error {
	order := make([]int, len(xys))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(xys[a].X, xys[b].X) })
	for side, dy := range []vg.Length{vg.Points(3), vg.Points(-11)} {
		var sub plotter.XYLabels
		for k, i := range order {
			if k%2 == side {
				sub.XYs = append(sub.XYs, xys[i])
				sub.Labels = append(sub.Labels, labels[i])
			}
		}
		if len(sub.XYs) == 0 {
			continue
		}
		lb, err := plotter.NewLabels(sub)
		if err != nil {
			return err
		}
		for k := range lb.TextStyle {
			lb.TextStyle[k].Color = color.Gray{Y: 40}
		}
		lb.Offset = vg.Point{X: vg.Points(5), Y: dy}
		p.Add(lb)
	}
	return nil
}
