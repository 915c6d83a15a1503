package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Slow and idle clients. Each phase of a request that waits on the client
// has a deadline: the header (ReadHeaderTimeout), the body (BodyIdleTimeout
// between bytes, RequestTimeout in all from the end of the header), a
// duplex line (the same two, from its first byte), the wait for the next
// duplex line (IdleTimeout) and an idle keep-alive connection
// (KeepAliveTimeout). Connections are capped globally (MaxConns: the
// listener answers 503 to the ones beyond) and per tenant (max_conns:
// requests in progress and duplex connections, 429 beyond). At shutdown,
// clients still sending a header or a body are cut after a short grace
// (ShutdownReadGrace), so that they cannot hold the shutdown.

// errBodyTimeout is the error of a request body (or duplex line) that did
// not arrive in time.
var errBodyTimeout = errors.New("the request body did not arrive in time")

// bodyTimeout is errBodyTimeout with the limit that was hit.
type bodyTimeout struct{ what string }

func (e bodyTimeout) Error() string { return "request timeout: " + e.what }
func (e bodyTimeout) Is(target error) bool {
	return target == errBodyTimeout
}

// Timeout reports true, as net.Error's timeouts do: handlers outside this
// package (the proxy) read the body through it and answer 408 by it.
func (bodyTimeout) Timeout() bool { return true }

// timedBody sets the connection's read deadline before each read of a
// body: the earlier of now+between and end. Once the body ends it lifts
// the deadline, so that the request's judging is not cut by it (net/http
// reads the connection in the background to notice a client leaving).
// Once cut ends (the shutdown's grace for readers is over), a read in
// progress or to come stops at once.
type timedBody struct {
	r       io.ReadCloser
	rc      *http.ResponseController
	between time.Duration
	end     time.Time
	cut     context.Context

	mu      sync.Mutex // orders deadline changes with the end of the body
	done    bool
	timeout error // the limit hit, once one was
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return b.r.Read(p)
	}
	now := time.Now()
	dl, whole := now.Add(b.between), false
	if !b.end.After(dl) {
		dl, whole = b.end, true
	}
	b.rc.SetReadDeadline(dl)
	if b.cut.Err() != nil { // checked after setting it: a cut in between is seen
		b.rc.SetReadDeadline(now)
	}
	b.mu.Unlock()
	n, err := b.r.Read(p)
	if err != nil {
		b.mu.Lock()
		b.done = true
		if err == io.EOF {
			b.rc.SetReadDeadline(time.Time{})
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			if b.cut.Err() != nil {
				err = fmt.Errorf("%w: the request body was still arriving", ErrShuttingDown)
			} else if whole {
				err = bodyTimeout{"the body was not complete within the request timeout"}
			} else {
				err = bodyTimeout{fmt.Sprintf("no byte of the body for %s", b.between)}
			}
			b.timeout = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// cutNow stops a read in progress, unless the body is complete.
func (b *timedBody) cutNow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.rc.SetReadDeadline(time.Now())
	}
}

func (b *timedBody) Close() error { return b.r.Close() }

// connCounter caps the connections of a listener.
type connCounter struct {
	net.Listener
	srv  *Server
	max  int64
	open atomic.Int64

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// trackedConn is an accepted connection: counted until closed, with the
// state net/http reports.
type trackedConn struct {
	net.Conn
	cc    *connCounter
	state atomic.Int32 // http.ConnState
	once  sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.cc.open.Add(-1)
		c.cc.mu.Lock()
		delete(c.cc.conns, c)
		c.cc.mu.Unlock()
		c.cc.srv.metrics.openConns.Add(-1)
	})
	return err
}

func (srv *Server) countConns(ln net.Listener) *connCounter {
	return &connCounter{Listener: ln, srv: srv, max: int64(srv.opts.MaxConns), conns: map[*trackedConn]struct{}{}}
}

// Accept returns the next connection within the cap; one beyond it is
// answered 503 and closed, without a goroutine of net/http's.
func (cc *connCounter) Accept() (net.Conn, error) {
	for {
		c, err := cc.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := cc.open.Add(1); cc.max > 0 && n > cc.max {
			cc.open.Add(-1)
			cc.srv.metrics.rejected("connections")
			go refuseConn(c, cc.srv.opts.RetryAfter)
			continue
		}
		tc := &trackedConn{Conn: c, cc: cc}
		cc.mu.Lock()
		cc.conns[tc] = struct{}{}
		cc.mu.Unlock()
		cc.srv.metrics.openConns.Add(1)
		return tc, nil
	}
}

// refuseConn answers a connection over the cap with 503 and closes it.
func refuseConn(c net.Conn, retry time.Duration) {
	defer c.Close()
	body := `{"error":{"message":"the server's connection limit is reached; retry later","type":"overloaded_error","param":null,"code":"too_many_connections"}}` + "\n"
	c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		max(1, int(retry.Seconds()+0.999)), len(body), body)
	// Closing with unread request bytes would reset the connection and
	// could destroy the answer before the client reads it: read a little
	// first.
	if tcp, ok := c.(*net.TCPConn); ok {
		tcp.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

func (cc *connCounter) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*trackedConn); ok {
		tc.state.Store(int32(st))
	}
}

// cutNew ends the reads of the connections that have not delivered a
// first request header (a slow client's, or one that sent nothing): at
// shutdown, once the grace for them is over. Their read deadline passes
// now rather than the connection being closed, so that a request whose
// header arrived at this very moment is still answered (net/http marks
// a connection active only once the header is read). Idle keep-alive
// connections are net/http's to close; a request past its header ends
// with its handler (a body still being sent is cut by its read deadline).
func (cc *connCounter) cutNew() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	n := 0
	for c := range cc.conns {
		if http.ConnState(c.state.Load()) == http.StateNew {
			c.Conn.SetReadDeadline(time.Now())
			n++
		}
	}
	return n
}

// acquireConn takes one of the tenant's connection slots.
func (t *Tenant) acquireConn() bool {
	if n := t.conns.Add(1); t.MaxConns > 0 && n > int64(t.MaxConns) {
		t.conns.Add(-1)
		return false
	}
	return true
}

func (t *Tenant) releaseConn() { t.conns.Add(-1) }
