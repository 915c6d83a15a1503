package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Stalled clients hold connections without finishing requests: slow ones
// send a moderation request's body one byte every SlowEvery (the server
// cuts them with 408 after --request-timeout, and they start again), idle
// ones open a connection and send nothing (the server closes it after
// --read-header-timeout, and they open another). They are not counted as
// the workers' requests: the server does not count a request whose body
// never arrived as accepted.

// StallReport counts what the stalled clients met.
type StallReport struct {
	SlowClients int `json:"slow_clients"`
	IdleConns   int `json:"idle_conns"`
	// SlowRequests were started; SlowTimedOut were answered 408
	// request_timeout; SlowOther ended otherwise (503 at shutdown, closed).
	SlowRequests int64 `json:"slow_requests"`
	SlowTimedOut int64 `json:"slow_timed_out"`
	SlowOther    int64 `json:"slow_other"`
	// IdleClosed counts idle connections the server closed.
	IdleClosed int64 `json:"idle_closed"`
	// DialErrors counts connections that could not be opened before the
	// phase's end (refused by --max-conns, or the server down).
	DialErrors int64 `json:"dial_errors"`
}

type stallers struct {
	addr                                                          string
	stop                                                          chan struct{}
	wg                                                            sync.WaitGroup
	rep                                                           StallReport
	slowRequests, slowTimedOut, slowOther, idleClosed, dialErrors atomic.Int64
	stopped                                                       atomic.Bool
	ending                                                        atomic.Bool // the server is being stopped
}

// serverStopping stops counting failed dials and closed connections: the
// server is going away.
func (s *stallers) serverStopping() { s.ending.Store(true) }

func startStallers(base string, slow int, every time.Duration, idle int) (*stallers, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	s := &stallers{addr: u.Host, stop: make(chan struct{}), rep: StallReport{SlowClients: slow, IdleConns: idle}}
	for range slow {
		s.wg.Go(func() { s.loop(func(c net.Conn) { s.slowRequest(c, every) }) })
	}
	for range idle {
		s.wg.Go(func() { s.loop(s.idleConn) })
	}
	return s, nil
}

// loop opens connections one after another until stopped.
func (s *stallers) loop(use func(net.Conn)) {
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
		if err != nil {
			if !s.ending.Load() {
				s.dialErrors.Add(1)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-s.stop:
			case <-done:
			}
			c.Close()
		}()
		use(c)
		close(done)
	}
}

func (s *stallers) slowRequest(c net.Conn, every time.Duration) {
	body := `{"input": "a slow client sends this one byte at a time"}`
	if _, err := fmt.Fprintf(c, "POST /v1/moderations HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", s.addr, len(body)); err != nil {
		return
	}
	s.slowRequests.Add(1)
	answered := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; {
		select {
		case code := <-answered:
			if code == http.StatusRequestTimeout {
				s.slowTimedOut.Add(1)
			} else {
				s.slowOther.Add(1)
			}
			return
		case <-t.C:
			if i < len(body) {
				if _, err := c.Write([]byte{body[i]}); err == nil {
					i++
				}
			}
		}
	}
}

func (s *stallers) idleConn(c net.Conn) {
	io.Copy(io.Discard, c) // until the server closes it (or the phase ends)
	if !s.ending.Load() {
		s.idleClosed.Add(1)
	}
}

// halt stops the clients and returns the counts.
func (s *stallers) halt() StallReport {
	if s.stopped.Swap(true) {
		return s.rep
	}
	s.ending.Store(true)
	close(s.stop)
	s.wg.Wait()
	s.rep.SlowRequests, s.rep.SlowTimedOut, s.rep.SlowOther = s.slowRequests.Load(), s.slowTimedOut.Load(), s.slowOther.Load()
	s.rep.IdleClosed, s.rep.DialErrors = s.idleClosed.Load(), s.dialErrors.Load()
	return s.rep
}
