package kvctl

import (
	"encoding/json"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// emit writes v in the -o format: JSON, YAML, or the human table that
// table writes. JSON and YAML carry the same field names (the json tags),
// because YAML is produced from the JSON encoding.
func (g *globals) emit(w io.Writer, v any, table func(io.Writer) error) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		return writeYAML(w, v)
	}
	return table(w)
}

// writeYAML re-encodes v's JSON form as block-style YAML, keeping the key
// order and letting the encoder quote strings that would read as numbers.
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	plain(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// plain drops the flow and quoting styles the JSON text implied.
func plain(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		plain(c)
	}
}
