package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSmallTrainData writes n small conversations with prompt and response
// labels (three categories) and returns the file's path.
func writeSmallTrainData(t *testing.T, dir string, n int) string {
	t.Helper()
	cats := []string{"Weapons", "Fraud", "Malware"}
	risks := []string{"Safe", "Unsafe", "Controversial"}
	var b strings.Builder
	for i := range n {
		k := i * 7
		prompt := fmt.Sprintf(`{"risk":%q,"category":%q}`, risks[k%3], cats[k%3])
		resp := `{"risk":"Safe"}`
		if k%2 == 0 {
			resp = fmt.Sprintf(`{"risk":"Unsafe","category":%q,"unsafe_start_index":%d}`, cats[(k/2)%3], k%3)
		}
		fmt.Fprintf(&b, `{"id":%d,"messages":[{"role":"user","content":"question %d about %d"},{"role":"assistant","content":"answer with %d words more or less"}],"prompt":%s,"response":%s}`+"\n",
			i, i, k%13, k%9, prompt, resp)
	}
	path := filepath.Join(dir, "train.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A learning rate that Check accepts but that overflows the logits in the
// first epoch leaves every validation loss NaN: training diverged, said as
// such (Fit once returned no best weights and Run dereferenced nil:
// `train-heads --lr 1e20 --weight-decay 0 --epochs 1` panicked).
func TestRunHugeLearningRateDiverges(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions()
	o.Model = tinyModel(t, "bf16")
	o.Data = writeSmallTrainData(t, dir, 40)
	o.Out = filepath.Join(dir, "out")
	o.LR, o.WeightDecay, o.Epochs, o.Batch = 1e20, 0, 1, 1000
	if err := o.Check(); err != nil {
		t.Fatalf("Check refused the options (the test premise is gone): %v", err)
	}
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Run panicked: %v", r)
			}
		}()
		_, err = Run(context.Background(), o)
	}()
	if err == nil || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("Run error %v, want training diverged (every validation loss was not a number)", err)
	}
}

// Options.Check refuses NaN for --weight-decay and --val-fraction: NaN
// weight decay ran the whole feature extraction and then failed with
// "training diverged ... lower --lr" (the learning rate is fine), and a NaN
// validation fraction silently trained without validation or early stopping.
func TestOptionsCheckRefusesNaN(t *testing.T) {
	for name, set := range map[string]func(*Options){
		"weight decay NaN":        func(o *Options) { o.WeightDecay = math.NaN() },
		"validation fraction NaN": func(o *Options) { o.ValFraction = math.NaN() },
	} {
		o := DefaultOptions()
		o.Model, o.Data, o.Out = "m", "d.jsonl", "out"
		set(&o)
		if err := o.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// encoding/json matches keys case-insensitively and keeps the last of
// repeated keys: a line with "messages" then "Messages" would train the
// labels on the second conversation, while moderate --jsonl (which reads
// the same file) and any exact-key reader see the first. Refused.
func TestParseExampleRefusesCaseVariantKeys(t *testing.T) {
	line := `{"messages":[{"role":"user","content":"what a nice day"}],` +
		`"Messages":[{"role":"user","content":"how do I build a pipe bomb"}],"prompt":{"risk":"Safe"}}`
	ex, err := ParseExample([]byte(line))
	if err == nil {
		t.Errorf("accepted; trains %q as %s", ex.Messages[0].Content, ex.Prompt.Risk)
	}
	dup := `{"messages":[{"role":"user","content":"x"}],"prompt":{"risk":"Unsafe","category":"A"},"prompt":{"risk":"Safe"}}`
	if ex, err := ParseExample([]byte(dup)); err == nil {
		t.Errorf("repeated \"prompt\" accepted; trained as %+v", *ex.Prompt)
	}
}

// A risk written in another letter case ("safe") is refused for its
// spelling, not told it "needs a category" (which sent the user to add
// one).
func TestLowercaseSafeRiskError(t *testing.T) {
	_, err := ParseExample([]byte(`{"messages":[{"role":"user","content":"x"}],"prompt":{"risk":"safe"}}`))
	if err == nil {
		t.Fatal("accepted")
	}
	if !strings.Contains(err.Error(), `"Safe"`) || strings.Contains(err.Error(), "needs a category") {
		t.Errorf("misleading error: %v", err)
	}
}
