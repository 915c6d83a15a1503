// Command streamguard runs streaming safety moderation with Qwen3Guard-Stream
// models: inference, model tooling (verify, gen-model, quantize), and a server.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand. Each lives in its own file and registers itself
// from init, so subcommands can be added without touching this file.
type command struct {
	name    string
	summary string
	// run parses args (without the subcommand name) and executes. It returns
	// an error for the caller to print; usage errors wrap errUsage.
	run func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("streamguard: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// errUsage marks an error as a command-line mistake (exit status 2).
var errUsage = errors.New("usage error")

// errSilent is returned when the command already reported the failure
// (for example a verify report) and only the exit status remains.
var errSilent = errors.New("failed")

// errFlagged is returned by moderate when the conversation was flagged: the
// verdict is already printed and only the exit status (3) remains.
var errFlagged = errors.New("flagged")

// exitFlagged is the exit status of a flagged moderation.
const exitFlagged = 3

func main() {
	os.Exit(mainWithArgs(os.Args[1:], os.Stdout, os.Stderr))
}

func mainWithArgs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = []string{"version"}
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "streamguard: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := c.run(args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlagged):
		return exitFlagged
	case errors.Is(err, errSilent):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "streamguard %s: %v\n", c.name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "streamguard %s: %v\n", c.name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "streamguard: streaming safety moderation with Qwen3Guard-Stream models")
	fmt.Fprintln(w, "\nUsage: streamguard COMMAND [flags]   (streamguard COMMAND -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
}

// newFlagSet returns a flag set whose -h output names the command and whose
// parse errors are returned rather than exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: streamguard %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, mapping flag errors to errUsage so the exit status
// is 2, and -h to flag.ErrHelp (exit 0).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// usageErrorf reports a command-line mistake.
func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}
