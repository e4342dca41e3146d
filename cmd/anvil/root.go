package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/progress"
)

// app is what every command shares: the streams and the logger. It is built
// once in newRootCmd and passed down; nothing here is global.
type app struct {
	in        io.Reader
	out       io.Writer
	errOut    io.Writer
	logLevel  string
	logFormat string
}

// logger builds the structured logger from --log-level and --log-format.
// Logs go to stderr; user-facing results go to stdout.
func (a *app) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if strings.EqualFold(a.logFormat, "json") {
		return slog.New(slog.NewJSONHandler(a.errOut, opts))
	}
	return slog.New(slog.NewTextHandler(a.errOut, opts))
}

func newRootCmd(in io.Reader, out, errOut io.Writer) *cobra.Command {
	a := &app{in: in, out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "anvil",
		Short: "Install and run bare-metal Kubernetes",
		Long: `anvil turns Linux machines into a highly available Kubernetes control plane
and a fleet of registered nodes, and backs it up and restores it.

From a workstation it provisions machines over SSH from a cluster file; on a
machine it initialises or joins the control plane, runs the embedded etcd
member and the node agent.`,
		Example: `  # Write an example cluster file, check it, and provision the machines in it
  anvil config init -o cluster.yaml
  anvil config validate -f cluster.yaml
  anvil cluster apply -f cluster.yaml

  # Or bring up a control plane on this machine
  anvil init --layout process`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(
		newVersionCmd(a),
		newCompletionCmd(a),
		newConfigCmd(a),
		newImagesCmd(a),
		newLabCmd(a),
		newEtcdCmd(a),
		newCertsCmd(a),
		newRenderCmd(a),
		newSuperviseCmd(a),
		newInitCmd(a),
		newResetCmd(a),
		newStatusCmd(a),
		newAddonsCmd(a),
		newSupportBundleCmd(a),
		newTokenCmd(a),
		newVIPCmd(a),
		newApproverCmd(a),
		newJoinCmd(a),
		newAgentCmd(a),
		newClusterCmd(a),
		newBackupCmd(a),
		newRestoreCmd(a),
		newUpgradeCmd(a),
	)
	return root
}

// progress tells the person at the terminal what a long step is doing. It
// goes to stderr so that stdout stays parseable.
func (a *app) progress(msg string) { fmt.Fprintln(a.errOut, msg) }

// nodeTask is how a command on one machine (init, join, reset, restore,
// backup) shows its phases and messages: one task named for the node, on
// stderr, live on a terminal and as plain timestamped lines otherwise. The
// returned func ends the view.
func (a *app) nodeTask(name string) (*progress.Task, func()) {
	o := progress.ForTerminal(a.errOut)
	o.NoSummary = true
	rep := progress.New(a.errOut, o)
	return rep.Task(name), rep.Close
}

// confirm asks the person at the terminal to type "yes" before something
// that cannot be undone: what it does is said first, and any other answer
// is an error saying nothing was changed (what names the command).
func (a *app) confirm(what, consequence string) error {
	fmt.Fprintf(a.errOut, "%s Type 'yes' to go on: ", consequence)
	var answer string
	fmt.Fscanln(a.in, &answer)
	if answer != "yes" {
		return exitError{code: 1, msg: what + " cancelled; nothing was changed"}
	}
	return nil
}

// usageError marks a problem with the command line itself.
func usageError(format string, args ...any) error {
	return exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}
