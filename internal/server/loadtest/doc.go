// Package loadtest drives `streamguard serve` with many concurrent
// streams, as `streamguard loadtest` does: it starts the server as a child
// process on 127.0.0.1, runs conversations through it (REST sessions and
// duplex connections, response fed one token per request as ids or text),
// checks every verdict against a solo run of the same conversation on the
// library, and reports throughput, per-token latency, batch sizes and
// memory. A baseline phase runs the same load with batching off
// (serve --max-batch-streams 1) for the throughput ratio, and the main
// phase can end with SIGTERM under load to check that every request the
// server accepted was answered.
package loadtest
