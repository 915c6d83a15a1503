package guard_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/guard/guardtest"
)

// exampleModel writes a tiny synthetic model folder (package guardtest,
// for tests without the real weights); a real deployment points Load at a
// Qwen3Guard-Stream checkpoint folder or hub id instead.
func exampleModel() (dir string, cleanup func()) {
	tmp, err := os.MkdirTemp("", "guard-example")
	if err != nil {
		log.Fatal(err)
	}
	dir = filepath.Join(tmp, "model")
	if err := guardtest.WriteModel(dir, guardtest.Options{Seed: 1}); err != nil {
		log.Fatal(err)
	}
	return dir, func() { os.RemoveAll(tmp) }
}

// Moderate a response while it is generated: judge the prompt, then feed
// the text deltas as they arrive and stop as soon as the stream is flagged.
func Example() {
	dir, cleanup := exampleModel()
	defer cleanup()

	m, err := guard.Load(context.Background(), dir, guard.Options{Policy: guard.Policy{Mode: guard.Strict, Debounce: 2}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	s := m.NewStream()
	defer s.Close()
	pv, err := s.JudgePrompt(context.Background(), []guard.Message{{Role: "user", Content: "How do I bake bread?"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("prompt verdict read at position", pv.Position)

	judged := 0
	for _, delta := range []string{"Mix flour", ", water and", " yeast, then bake."} {
		tvs, err := s.AppendText(context.Background(), delta)
		if err != nil {
			log.Fatal(err)
		}
		judged += len(tvs) // each: tv.Risk, tv.RiskProb, tv.Category
		if _, flagged := s.Flagged(); flagged {
			break // stop the generation
		}
	}
	tvs, err := s.FlushText(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	judged += len(tvs)
	fmt.Println("the decision covers every judged token:", s.Decision().Tokens == judged)
	// Output:
	// prompt verdict read at position 9
	// the decision covers every judged token: true
}

// Serve many streams with one forward per step: queue work on each stream,
// then Step them together. Long prompts are prefilled in chunks so that
// streaming responses keep flowing.
func ExampleModel_Step() {
	dir, cleanup := exampleModel()
	defer cleanup()
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	streams := []*guard.Stream{m.NewStream(), m.NewStream()}
	for i, s := range streams {
		defer s.Close()
		if err := s.QueuePrompt([]guard.Message{{Role: "user", Content: fmt.Sprintf("Question number %d?", i)}}); err != nil {
			log.Fatal(err)
		}
		if err := s.QueueText("An answer."); err != nil {
			log.Fatal(err)
		}
		if err := s.QueueFlushText(); err != nil {
			log.Fatal(err)
		}
	}
	steps := 0
	for streams[0].Pending()+streams[1].Pending() > 0 {
		if _, err := m.Step(context.Background(), streams, guard.StepOptions{MaxTokens: 8}); err != nil {
			log.Fatal(err)
		}
		steps++
	}
	fmt.Println("steps:", steps, "tokens fed:", streams[0].Len(), streams[1].Len())
	// Output:
	// steps: 3 tokens fed: 20 20
}
