// Command streamguard runs streaming safety moderation with Qwen3Guard-Stream
// models: inference, model tooling (verify, gen-model, quantize), and a server.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
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
	if len(args) == 0 {
		// No command at all is a mistake: the list goes where errors go.
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		// Help that was asked for is the output (streamguard --help | less).
		usage(stdout)
		return 0
	case "help":
		return helpCommand(args[1:], stdout, stderr)
	case "--version", "-version":
		args = []string{"version"}
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "streamguard: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return runCommand(c, args[1:], stdout, stderr)
}

// helpCommand is `streamguard help [COMMAND]`: the command list, or the
// help of one command (what COMMAND -h prints), on stdout.
func helpCommand(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		usage(stdout)
		return 0
	case 1:
	default:
		fmt.Fprintf(stderr, "streamguard help: want one command name, got %d\n", len(args))
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(stdout) // help about help: the command list
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "streamguard help: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return runCommand(c, []string{"-h"}, stdout, stderr)
}

// runCommand runs c and maps its error to the exit status. The command's
// stderr is a helpStderr, so that the usage text its flag set prints for
// -h reaches stdout.
func runCommand(c *command, args []string, stdout, stderr io.Writer) int {
	err := c.run(args, stdout, &helpStderr{w: stderr, stdout: stdout})
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

// helpStderr is the stderr a command runs with. The flag package prints a
// command's usage text from inside Parse both for -h and after a flag
// mistake, and commands print it to stderr (some from their own Usage
// functions); parseFlags has this writer hold back what is written while
// it parses, then sends it to stdout when help was asked for (exit 0) and
// to stderr after a mistake (exit 2). Outside parseFlags it passes every
// write through.
type helpStderr struct {
	w, stdout io.Writer
	// mu: a running command writes stderr from several goroutines (serve's
	// logs, progress bars).
	mu   sync.Mutex
	held *bytes.Buffer // non-nil while parseFlags parses
}

func (h *helpStderr) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held != nil {
		return h.held.Write(p)
	}
	return h.w.Write(p)
}

// hold starts holding writes back; release ends it and writes what was
// held to stdout when toStdout, else to stderr.
func (h *helpStderr) hold() {
	h.mu.Lock()
	h.held = new(bytes.Buffer)
	h.mu.Unlock()
}

func (h *helpStderr) release(toStdout bool) {
	h.mu.Lock()
	b := h.held
	h.held = nil
	h.mu.Unlock()
	dst := h.w
	if toStdout {
		dst = h.stdout
	}
	dst.Write(b.Bytes())
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "streamguard: streaming safety moderation with Qwen3Guard-Stream models")
	fmt.Fprintln(w, "\nUsage: streamguard COMMAND [flags]   (streamguard help COMMAND, or COMMAND -h, for its flags)")
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
		line := "Usage: streamguard " + name
		if synopsis != "" {
			line += " " + synopsis
		}
		fmt.Fprintln(stderr, line)
		// A command without flags (version) gets no empty "Flags:" header.
		if hasFlags(fs) {
			fmt.Fprint(stderr, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// hasFlags reports whether fs defines any flag.
func hasFlags(fs *flag.FlagSet) bool {
	found := false
	fs.VisitAll(func(*flag.Flag) { found = true })
	return found
}

// parseFlags parses args, mapping flag errors to errUsage so the exit status
// is 2, and -h to flag.ErrHelp (exit 0). The usage text Parse prints goes to
// stdout for -h and to stderr after a mistake (see helpStderr).
func parseFlags(fs *flag.FlagSet, args []string) error {
	h, _ := fs.Output().(*helpStderr)
	if h != nil {
		h.hold()
	}
	err := fs.Parse(args)
	if h != nil {
		h.release(errors.Is(err, flag.ErrHelp))
	}
	if err != nil {
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
