// Package kvctl implements the operator CLI on spf13/cobra: node stats,
// lookups, raw block get/put for debugging, the cluster view, health
// probes and the KV memory calculator.
//
// Conventions every command follows: -h/--help anywhere prints help and
// runs nothing; global flags (persistent flags of the root command) go
// anywhere on the line and each also reads KVCACHE_<NAME> from the
// environment; -o table|json|yaml selects the output; a usage error exits 2
// and an operational failure 1, each reported by one line on stderr.
package kvctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kvcache/kvcache/internal/buildinfo"
)

// ErrUsage reports a command line that cannot be run: unknown command or
// flag, missing or malformed argument. Main wraps every such error in it.
var ErrUsage = errors.New("usage")

// Env is what the CLI reads and writes.
type Env struct {
	Stdout, Stderr io.Writer
	// LookupEnv reads environment variables; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

func (e *Env) lookupEnv(k string) (string, bool) {
	if e.LookupEnv != nil {
		return e.LookupEnv(k)
	}
	return os.LookupEnv(k)
}

// EnvPrefix starts the environment variable of every global flag:
// --nodes is KVCACHE_NODES, --tls-ca would be KVCACHE_TLS_CA.
const EnvPrefix = "KVCACHE_"

// EnvName is the environment variable that sets global flag name.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// globals holds the global flags. A new global flag is one line in
// newRoot's flag block: its environment variable, its "(env ...)" note
// in the help and its precedence (flag over env over default) come with it.
type globals struct {
	env     *Env
	nodes   string
	timeout time.Duration
	output  string
	json    bool
	sec     securityFlags // security.go
}

// Main runs the CLI with args (without the program name). A usage error
// matches ErrUsage; any other error is an operational failure.
func Main(ctx context.Context, e *Env, args []string) error {
	_, err := execute(ctx, e, args)
	return err
}

// Run runs the CLI, prints a failure as one line on stderr, and returns
// the process exit code: 0 success, 1 operational failure, 2 usage error.
func Run(ctx context.Context, e *Env, args []string) int {
	cmd, err := execute(ctx, e, args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(e.Stderr, "kvctl: %v\n", err)
	code := ExitCode(err)
	if code == 2 && cmd != nil {
		fmt.Fprintf(e.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// ExitCode maps an error from Main to the process exit status.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	}
	return 1
}

// runError marks an error returned by a command's own code, as opposed
// to one cobra returned while parsing the line (always a usage error).
type runError struct{ err error }

func (r *runError) Error() string { return r.err.Error() }
func (r *runError) Unwrap() error { return r.err }

func execute(ctx context.Context, e *Env, args []string) (*cobra.Command, error) {
	root := newRoot(e)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cmd, nil
	}
	var re *runError
	if errors.As(err, &re) {
		return cmd, re.err
	}
	if errors.Is(err, ErrUsage) {
		return cmd, err
	}
	return cmd, fmt.Errorf("%w: %v", ErrUsage, err)
}

// runE adapts a command body: it gets the context and the globals, and
// what it returns counts as an operational failure unless it wraps ErrUsage.
func runE(g *globals, f func(ctx context.Context, cmd *cobra.Command, g *globals) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := f(cmd.Context(), cmd, g); err != nil {
			return &runError{err}
		}
		return nil
	}
}

func newRoot(e *Env) *cobra.Command {
	g := &globals{env: e}
	root := &cobra.Command{
		Use:   "kvctl",
		Short: "Operator CLI of a kvcache cluster",
		Long: `kvctl inspects and tests a kvcache cluster: node stats and the cluster
view, lookups and raw block get/put for debugging, health probes for
containers, and a KV memory calculator.

Global flags go anywhere on the line and can be set in the environment:
--nodes is KVCACHE_NODES, --timeout is KVCACHE_TIMEOUT (a flag on the
line wins over the environment).`,
		Version:           buildinfo.Get().String(),
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return g.resolve(cmd) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(e.Stderr, cmd.UsageString())
			return fmt.Errorf("%w: no command given", ErrUsage)
		},
	}
	root.SetOut(e.Stdout)
	root.SetErr(e.Stderr)
	root.SetVersionTemplate("kvctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %v", ErrUsage, err) })

	pf := root.PersistentFlags()
	pf.StringVar(&g.nodes, "nodes", "localhost:7070", "comma-separated cache node addresses: host:port, dns:///host:port or dnssrv:///name")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline of each call")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.BoolVar(&g.json, "json", false, "same as -o json")
	g.sec.register(pf)
	pf.VisitAll(func(f *pflag.Flag) { f.Usage += " (env " + EnvName(f.Name) + ")" })

	root.AddCommand(statsCmd(g), lookupCmd(g), getCmd(g), putCmd(g), sizeCmd(g), clusterCmd(g), probeCmd(g), versionCmd(g))
	return root
}

// resolve applies KVCACHE_* variables to global flags not set on the line,
// then checks the output format.
func (g *globals) resolve(cmd *cobra.Command) error {
	var errs []error
	cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		if v, ok := g.env.lookupEnv(EnvName(f.Name)); ok && v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s=%q: %v", ErrUsage, EnvName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if g.json {
		if o := cmd.Flags().Lookup("output"); o != nil && o.Changed && g.output != "json" {
			return fmt.Errorf("%w: --json and -o %s disagree", ErrUsage, g.output)
		}
		g.output = "json"
	}
	switch g.output {
	case "table", "json", "yaml":
	default:
		return fmt.Errorf("%w: -o %q: want table, json or yaml", ErrUsage, g.output)
	}
	if g.timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", ErrUsage)
	}
	return nil
}

// nodeList splits --nodes.
func (g *globals) nodeList() []string {
	var out []string
	for _, s := range strings.Split(g.nodes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kvctl's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: runE(g, func(_ context.Context, cmd *cobra.Command, g *globals) error {
			i := buildinfo.Get()
			return g.emit(cmd.OutOrStdout(), i, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "kvctl %s\n", i)
				return err
			})
		}),
	}
}
