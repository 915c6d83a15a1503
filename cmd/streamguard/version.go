package main

import (
	"fmt"
	"io"
)

// version is stamped into model cards and provenance metadata.
const version = "0.1.0-dev"

func init() {
	register(&command{
		name:    "version",
		summary: "print the streamguard version",
		run: func(args []string, stdout, stderr io.Writer) error {
			fs := newFlagSet("version", "", stderr)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "streamguard", version)
			return nil
		},
	})
}
