package guard

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// TestAutoFallbackKeepsCanonicalRiskNames: a cuda build loading with
// Device "auto" loads the network for upload, and when the GPU cannot take
// it, falls back to the CPU by loading the network again: the second
// network's risk levels are renamed to the exported names too, not left in
// config.json's spelling ("unsafe") for Verdict.Risk and Info().Labels.
func TestAutoFallbackKeepsCanonicalRiskNames(t *testing.T) {
	dir := writeTinyFolder(t)
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ResponseRiskLevelMap = map[string]string{"0": "Safe", "1": "unsafe", "2": "controversial"}
	cfg.QueryRiskLevelMap = map[string]string{"0": "Safe", "1": "unsafe", "2": "controversial"}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	// A cuda build on a machine whose GPU cannot take the model.
	old := newGPUEngine
	newGPUEngine = func(*qwen3.Model, int) (engine, error) { return nil, errors.New("no GPU here") }
	defer func() { newGPUEngine = old }()

	m, err := Load(context.Background(), dir, Options{Device: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, l := range [][]string{m.Info().Labels.ResponseRisk, m.Info().Labels.QueryRisk} {
		if l[0] != Safe || !slices.Contains(l, Unsafe) || !slices.Contains(l, Controversial) {
			t.Errorf("device auto, CPU fallback: risk levels %q, want the exported names %q %q %q", l, Safe, Unsafe, Controversial)
		}
	}
}

// panicEngine is the CPU engine whose forward panics (a kernel bug, a
// bounds check): a library caller's HTTP handler recovers it (net/http
// does so by default).
type panicEngine struct{ engine }

func (panicEngine) forward([]kvCache, [][]int, bool) ([]qwen3.Output, error) {
	panic("kernel bug")
}

// TestPanicInForwardReleasesTheModel: a panic in a forward that the caller
// recovers releases the model's read lock, so Close does not block for
// ever (and, once it waited, every later reader with it).
func TestPanicInForwardReleasesTheModel(t *testing.T) {
	m := loadMapped(t)
	m.eng = panicEngine{m.eng}
	s := m.NewStream()
	if err := s.QueuePrompt(userMsg); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		m.Step(context.Background(), []*Stream{s}, StepOptions{})
	}()
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Model.Close still blocked 3 s after a recovered panic in a forward: the read lock leaked")
	}
}

// TestCloseRacesEverything (run with -race): Close while other
// goroutines open streams, read Info, step, and run forwardFresh.
func TestCloseRacesEverything(t *testing.T) {
	ctx := context.Background()
	m := loadMapped(t)
	stop := make(chan struct{})
	errc := make(chan error, 16)
	work := []func() error{
		func() error { s := m.NewStream(); defer s.Close(); _, err := s.JudgePrompt(ctx, userMsg); return err },
		func() error { _, err := m.forwardFresh([][]int{{1, 2, 3}}); return err },
		func() error { _ = m.Info(); _ = m.Policy(); return nil },
		func() error { _, err := m.Moderate(ctx, userMsg, nil); return err },
	}
	for _, w := range work {
		go func() {
			for {
				select {
				case <-stop:
					errc <- nil
					return
				default:
				}
				if err := w(); err != nil && !errors.Is(err, ErrModelClosed) {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	for range work {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestCorruptCacheIsNotNotExist: a hub id whose cache entry exists but
// cannot be read (a ref file that holds no commit) is not reported as
// fs.ErrNotExist, as a model simply not downloaded is.
func TestCorruptCacheIsNotNotExist(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "1")
	if err := os.MkdirAll(cache+"/models--Org--Guard/refs", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cache+"/models--Org--Guard/refs/main", "not a commit\n")
	_, err := Load(context.Background(), "Org/Guard", Options{})
	if err == nil {
		t.Fatal("loaded")
	}
	if errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt ref file reported as fs.ErrNotExist: %v", err)
	}
}
