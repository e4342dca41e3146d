package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	api "anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/agekey"
	"anvil.dev/anvil/internal/fsutil"
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
	var output, backupKey string
	var noBackupKey bool
	cmd := &cobra.Command{
		Use:   "init [-o FILE] [--backup-key FILE]",
		Short: "Write a commented example cluster file, with a backup key pair",
		Long: `Write an example cluster file with three masters and two workers, every
section present and every field explained, to stdout or -o FILE. Edit the
names and addresses, then check it with "anvil config validate".

Backups hold every CA key, so they are encrypted: init makes an age key pair
for them, the identity in --backup-key (default: backup.key beside FILE, or
in the current directory; 0600) and its recipient in backup.recipients. An
existing key file is kept and its recipient used. Keep a copy of the
identity off the masters: without it no backup can be read.
--no-backup-key leaves backup.recipients out (backups are then refused
until you set it, or allow unencrypted ones).`,
		Example: `  anvil config init -o cluster.yaml
  anvil config init > cluster.yaml
  anvil config validate -f cluster.yaml`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			text := api.ExampleClusterFile
			if !noBackupKey {
				if backupKey == "" {
					backupKey = filepath.Join(filepath.Dir(output), "backup.key")
				}
				recipient, created, err := agekey.Ensure(backupKey)
				if err != nil {
					return err
				}
				verb := "kept"
				if created {
					verb = "wrote"
				}
				fmt.Fprintf(a.errOut, "%s the backup identity %s (recipient %s): keep a copy off the masters\n", verb, backupKey, recipient)
				text = api.ExampleClusterFileFor(recipient, filepath.Base(backupKey))
			}
			if output == "" || output == "-" {
				_, err := io.WriteString(a.out, text)
				return err
			}
			return fsutil.WriteFile(output, []byte(text), 0o600, 0o700)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "cluster file to write (default: stdout)")
	cmd.Flags().StringVar(&backupKey, "backup-key", "", "age identity file for backups, made if missing (default: backup.key beside the cluster file)")
	cmd.Flags().BoolVar(&noBackupKey, "no-backup-key", false, "make no backup key pair; leave backup.recipients out")
	return cmd
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
