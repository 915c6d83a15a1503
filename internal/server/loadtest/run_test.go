package loadtest

import (
	"maps"
	"testing"
)

// TestParseMetrics reads the batch sizes and the KV-budget waits out of a
// /metrics text in the server's format.
func TestParseMetrics(t *testing.T) {
	body := `# HELP streamguard_steps_total Batched forward steps.
# TYPE streamguard_steps_total counter
streamguard_steps_total 40
streamguard_batch_streams_max 9
streamguard_batch_streams_bucket{le="8"} 30
streamguard_batch_streams_bucket{le="+Inf"} 40
streamguard_batch_streams_sum 300
streamguard_batch_streams_count 40
streamguard_batch_tokens_sum 1000
streamguard_batch_tokens_count 40
streamguard_kv_budget_waiting 2
streamguard_kv_budget_waits_total{outcome="granted"} 84
streamguard_kv_budget_waits_total{outcome="refused"} 20
streamguard_kv_budget_wait_seconds_total 808.5
`
	var pr PhaseReport
	pr.parseMetrics(body)
	if pr.Steps != 40 || pr.BatchMax != 9 || pr.BatchMean != 7.5 || pr.BatchTokensMean != 25 {
		t.Errorf("batches: steps %d, max %d, mean %v, tokens mean %v", pr.Steps, pr.BatchMax, pr.BatchMean, pr.BatchTokensMean)
	}
	if want := map[string]uint64{"8": 30, "+Inf": 40}; !maps.Equal(pr.BatchHistogram, want) {
		t.Errorf("histogram %v, want %v", pr.BatchHistogram, want)
	}
	if pr.KVWaitsGranted != 84 || pr.KVWaitsRefused != 20 || pr.KVWaitSeconds != 808.5 {
		t.Errorf("KV waits: %d granted, %d refused, %v s", pr.KVWaitsGranted, pr.KVWaitsRefused, pr.KVWaitSeconds)
	}
}
