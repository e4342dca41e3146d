package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	api "anvil.dev/anvil/api/v1alpha1"
)

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Write and check cluster files",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigInitCmd(a), newConfigValidateCmd(a))
	return cmd
}

func newConfigInitCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Print a commented example cluster file",
		Long: `Print an example cluster file with three masters and two workers, every
section present and every field explained. Edit the names and addresses,
then check it with "anvil config validate".`,
		Example: `  anvil config init > cluster.yaml
  anvil config validate -f cluster.yaml`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := io.WriteString(a.out, api.ExampleClusterFile)
			return err
		},
	}
}

type configValidateOptions struct {
	file   string
	output string
}

// problem is one line of `config validate -o json`.
type problem struct {
	Severity string `json:"severity"`
	*api.FieldError
}

func newConfigValidateCmd(a *app) *cobra.Command {
	var o configValidateOptions
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a cluster file and report every problem in it",
		Long: `Decode a cluster file strictly, fill in defaults and check every rule,
reporting all problems at once as FILE:LINE: PATH: MESSAGE. Warnings do not
make the file invalid. The exit code is 0 when the file is valid, 1 when it
is not.`,
		Example: `  anvil config validate -f cluster.yaml
  # machine-readable: a list of {severity, file, line, path, reason, message}
  anvil config validate -f cluster.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return runConfigValidate(a, o)
		},
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "the cluster file to check (required)")
	addOutputFlag(cmd, &o.output)
	return cmd
}

func runConfigValidate(a *app, o configValidateOptions) error {
	if o.file == "" {
		return usageError("config validate needs the cluster file: -f FILE")
	}
	_, warnings, err := api.Load(o.file)
	errs := api.AsFieldErrors(err)
	if err != nil && errs == nil {
		return err
	}
	problems := []problem{}
	for _, w := range warnings {
		problems = append(problems, problem{"warning", w})
	}
	for _, e := range errs {
		problems = append(problems, problem{"error", e})
	}
	perr := printOutput(a.out, o.output, problems, func() error {
		for _, p := range problems {
			line := p.Error()
			if p.Severity == "warning" {
				line = warningLine(p.FieldError)
			}
			if _, err := fmt.Fprintln(a.out, line); err != nil {
				return err
			}
		}
		summary := fmt.Sprintf("%s: valid", o.file)
		if len(errs) > 0 {
			summary = fmt.Sprintf("%s: %s", o.file, plural(len(errs), "error"))
		}
		if len(warnings) > 0 {
			summary += ", " + plural(len(warnings), "warning")
		}
		_, err := fmt.Fprintln(a.out, summary)
		return err
	})
	if perr != nil {
		return perr
	}
	if len(errs) > 0 {
		return exitError{code: 1}
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// warningLine puts "warning:" after the location, as compilers do, so that
// editors still jump to the line.
func warningLine(w *api.FieldError) string {
	rest := "warning: " + (&api.FieldError{Path: w.Path, Message: w.Message}).Error()
	if loc := w.Location(); loc != "" {
		return loc + ": " + rest
	}
	return rest
}
