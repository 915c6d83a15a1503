package guard

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// Model.Policy hands out a copy: p := m.Policy(); p.Thresholds[...] = ...
// (the natural way to give one stream a variant) changes neither the
// model's default nor the streams opened after, which would take the edit
// unvalidated.
func TestModelPolicyIsACopy(t *testing.T) {
	base := tinyModel(t, "f32", nil)
	opts := Options{Policy: Policy{Thresholds: map[string]float32{"Violent": 0.5}, Block: []string{"Violent", "PII"}}}
	m, err := wrap(base.net, base.tok, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Policy.Thresholds["Violent"] = 7 // the caller's Options, edited after the load
	p := m.Policy()
	p.Thresholds["Violent"] = 7
	p.Thresholds["No such category"] = -1
	p.Block[1] = "Weather"
	if got := m.Policy(); len(got.Thresholds) != 1 || got.Thresholds["Violent"] != 0.5 || got.Block[1] != "PII" {
		t.Errorf("editing the Policy that m.Policy() returned changed the model's default: now %+v", got)
	}
	if s := m.NewStream(); s.policy.Thresholds["Violent"] != 0.5 || s.policy.Block[1] != "PII" {
		t.Errorf("a new stream's policy took the caller's edit: %+v", s.policy)
	}
}

// SetPolicy keeps its own copy: a later edit of the caller's map (a
// policy value reused for the next tenant) does not reach the stream.
func TestSetPolicyKeepsItsOwnCopy(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	p := Policy{Thresholds: map[string]float32{"Violent": 0.5}, Block: []string{"Violent"}}
	if err := s.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	p.Thresholds["Violent"] = 99 // SetPolicy would refuse it
	p.Block[0] = "Weather"
	if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
		t.Fatal(err)
	}
	if got := s.policy; got.Thresholds["Violent"] != 0.5 || got.Block[0] != "Violent" {
		t.Errorf("the stream judges with %+v, an edit SetPolicy never saw", got)
	}
}

// Run with -race: a goroutine edits the Policy it got from m.Policy() while
// another's stream judges with the model's default thresholds.
func TestModelPolicyEditWhileStreamsJudge(t *testing.T) {
	base := tinyModel(t, "f32", nil)
	m, err := wrap(base.net, base.tok, Options{Policy: Policy{Thresholds: map[string]float32{"Violent": 0.5}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s := m.NewStream()
		defer s.Close()
		_, err := s.JudgePrompt(context.Background(), userMsg)
		for i := 0; i < 20 && err == nil; i++ {
			_, err = s.AppendText(context.Background(), " word word")
		}
		done <- err
	}()
	for range 200 {
		p := m.Policy()
		p.Thresholds["PII"] = 0.9
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(m.Policy().Thresholds) != 1 {
		t.Errorf("the model's default: %+v", m.Policy())
	}
}

// Mode is a text value: a Policy in a JSON (or any text) configuration
// says "strict" or "loose", and an unknown mode is an error, both ways.
func TestModeIsATextValue(t *testing.T) {
	var p Policy
	if err := json.Unmarshal([]byte(`{"Mode":"loose","Debounce":3}`), &p); err != nil || p.Mode != Loose || p.Debounce != 3 {
		t.Errorf(`json.Unmarshal({"Mode":"loose"}): %+v, %v; want Loose`, p, err)
	}
	b, err := json.Marshal(Policy{Mode: Loose})
	if err != nil || !strings.Contains(string(b), `"Mode":"loose"`) {
		t.Errorf("json.Marshal(Policy{Mode: Loose}) = %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"Mode":"lax"}`), &p); err == nil {
		t.Error(`json.Unmarshal({"Mode":"lax"}): no error`)
	}
	if _, err := json.Marshal(Policy{Mode: 7}); err == nil {
		t.Error("json.Marshal(Policy{Mode: 7}): no error")
	}
}
