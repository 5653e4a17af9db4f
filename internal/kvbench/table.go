package kvbench

import (
	"io"
	"strings"
	"unicode/utf8"
)

// Table is a markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Render writes t as a GitHub-flavoured markdown table with columns padded
// to equal width, so it reads as well in a terminal as rendered. Rows
// shorter than the header are padded with empty cells; a '|' in a cell is
// escaped.
func (t *Table) Render(w io.Writer) error {
	n := len(t.Header)
	for _, r := range t.Rows {
		n = max(n, len(r))
	}
	cell := func(r []string, i int) string {
		if i < len(r) {
			return strings.ReplaceAll(r[i], "|", `\|`)
		}
		return ""
	}
	width := make([]int, n)
	for i := range n {
		width[i] = max(3, utf8.RuneCountInString(cell(t.Header, i)))
		for _, r := range t.Rows {
			width[i] = max(width[i], utf8.RuneCountInString(cell(r, i)))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for i := range n {
			c := cell(r, i)
			b.WriteString(" ")
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i := range n {
		b.WriteString(strings.Repeat("-", width[i]+2))
		b.WriteString("|")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
