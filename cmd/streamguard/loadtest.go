package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/streamguard/streamguard/internal/server/loadtest"
)

func init() {
	register(&command{
		name:    "loadtest",
		summary: "load-test `streamguard serve` on 127.0.0.1: throughput, latency, batching, verdicts vs solo runs",
		run:     runLoadtest,
	})
}

func runLoadtest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("loadtest", "--model DIR|ORG/NAME[@REV] [--streams N] [--duration D] [flags] [-- SERVE-FLAGS...]", stderr)
	model := fs.String("model", "", "model folder or hub id ORG/NAME[@REV] (served, and judged solo for the reference verdicts)")
	device := fs.String("device", "cpu", "where the server and the solo reference run (as serve's --device), so that verdicts are compared on one device")
	streams := fs.Int("streams", 256, "concurrent conversations")
	duration := fs.Duration("duration", 2*time.Minute, "length of the batched phase")
	baseline := fs.Duration("baseline", 30*time.Second, "length of the phase with batching off (serve --max-batch-streams 1); 0 skips it")
	sigterm := fs.Bool("sigterm", true, "end the batched phase with SIGTERM under load and check that no accepted request lost its answer")
	convs := fs.Int("conversations", 32, "distinct conversations (each judged solo once for the reference)")
	promptWords := fs.Int("prompt-words", 24, "words per prompt")
	respTokens := fs.Int("response-tokens", 160, "tokens per response, fed one per request")
	duplexEvery := fs.Int("duplex-every", 4, "every n-th stream uses the duplex connection (0: none)")
	seed := fs.Uint64("seed", 1, "seed of the conversations")
	slow := fs.Int("slow-clients", 0, "during the batched phase, clients that send a moderation body one byte every --slow-every (cut by the server's --request-timeout, then again)")
	slowEvery := fs.Duration("slow-every", 5*time.Second, "the slow clients' pace")
	idleConns := fs.Int("idle-conns", 0, "during the batched phase, connections that send nothing (closed by the server's --read-header-timeout, then reopened)")
	workDir := fs.String("workdir", "", "folder for the servers' logs (default: a new temporary folder)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return usageErrorf("--model is required")
	}
	if *slow < 0 || *idleConns < 0 || *slowEvery <= 0 {
		return usageErrorf("--slow-clients and --idle-conns must not be negative, --slow-every positive")
	}
	if *streams < 1 || *convs < 1 || *respTokens < 1 || *duration <= 0 {
		return usageErrorf("--streams, --conversations, --response-tokens and --duration must be positive")
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if *workDir == "" {
		if *workDir, err = os.MkdirTemp("", "streamguard-loadtest-"); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := loadtest.Run(ctx, loadtest.Options{
		Model: dir, Device: *device, Exe: exe, ServeArgs: fs.Args(), Streams: *streams, Duration: *duration, Baseline: *baseline, SIGTERM: *sigterm,
		Conversations: *convs, PromptWords: *promptWords, ResponseTokens: *respTokens, DuplexEvery: *duplexEvery, Seed: *seed,
		WorkDir: *workDir, Progress: stderr, SlowClients: *slow, SlowEvery: *slowEvery, IdleConns: *idleConns,
	})
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		writeLoadReport(stdout, rep, *workDir)
	}
	if !rep.OK {
		return fmt.Errorf("load test failed (errors, mismatched verdicts, or a lost answer; logs in %s)", *workDir)
	}
	return nil
}

func writeLoadReport(w io.Writer, rep *loadtest.Report, workDir string) {
	fmt.Fprintf(w, "model %s on %s, %d streams; reference (solo) verdicts in %.1fs; load average %s -> %s\n", rep.Model, rep.Device, rep.Streams, rep.ReferenceSeconds, rep.LoadAvgBefore, rep.LoadAvgAfter)
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "\n%s: %.0fs measured after a ramp-up of %.0fs (until every stream's first prompt was judged)\n", p.Name, p.Seconds, p.RampUpSeconds)
		fmt.Fprintf(w, "  throughput       %.1f tokens/s (%d tokens; %d conversations completed, %d checked against solo runs)\n", p.TokensPerSecond, p.Tokens, p.Conversations, p.Checked)
		fmt.Fprintf(w, "  per-token        p50 %.2f ms, p99 %.2f ms (%d appends of one token)\n", p.AppendP50Ms, p.AppendP99Ms, p.Appends)
		fmt.Fprintf(w, "  batches          %d steps, streams per step max %d mean %.1f, tokens per step mean %.1f\n", p.Steps, p.BatchMax, p.BatchMean, p.BatchTokensMean)
		fmt.Fprintf(w, "  memory           RSS %.0f MiB at start, %.0f MiB at the end, max %.0f MiB; KV charged max %.1f MiB of %.1f MiB budget\n",
			float64(p.RSSStartBytes)/(1<<20), float64(p.RSSEndBytes)/(1<<20), float64(p.MaxRSSBytes)/(1<<20), float64(p.MaxKVReservedBytes)/(1<<20), float64(p.KVBudgetBytes)/(1<<20))
		if s := p.Stalled; s != nil {
			fmt.Fprintf(w, "  stalled clients  %d slow: %d requests, %d cut with 408, %d ended otherwise; %d idle: %d closed by the server; %d failed dials\n",
				s.SlowClients, s.SlowRequests, s.SlowTimedOut, s.SlowOther, s.IdleConns, s.IdleClosed, s.DialErrors)
		}
		fmt.Fprintf(w, "  outcome          %d 429s (retried), %d errors, %d verdict mismatches\n", p.Rejected429, p.Errors, p.Mismatches)
		for _, e := range append(p.ErrorSamples, p.MismatchSamples...) {
			fmt.Fprintf(w, "    %s\n", truncate(e, 300))
		}
		if s := p.Shutdown; s != nil {
			fmt.Fprintf(w, "  SIGTERM          server accepted %d, answered %d; clients received %d answers; %d requests refused after; exit %s; ok %v\n",
				s.ServerAccepted, s.ServerAnswered, s.ClientAnswers, s.RefusedAfter, s.ExitStatus, s.OK)
		}
	}
	if rep.Ratio > 0 {
		fmt.Fprintf(w, "\nbatching / one stream per step: %.2fx throughput\n", rep.Ratio)
	}
	fmt.Fprintf(w, "ok %v (server logs in %s)\n", rep.OK, workDir)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
