package main

import (
	"encoding/json"
	"io"

	"github.com/spf13/cobra"
)

// addOutputFlag adds the -o flag every list and status command takes.
func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "", "output format: json, or empty for a table")
}

// printOutput writes v as indented JSON when output is "json", or calls
// human to print it for people.
func printOutput(w io.Writer, output string, v any, human func() error) error {
	switch output {
	case "":
		return human()
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	default:
		return usageError("unknown output format %q: use json, or leave -o out for a table", output)
	}
}
