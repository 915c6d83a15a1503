package synth

import (
	"errors"
	"path/filepath"
	"sync"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// chunkBytes is the unit of work: small enough that a few per worker stay
// cheap, large enough that the write calls are big.
const chunkBytes = 1 << 20

// chunk is one piece of one tensor, filled by a worker and written, in
// order, by the writer.
type chunk struct {
	p     *tensorPlan
	first int64 // element index of buf[0]
	buf   []byte
	done  chan struct{}
}

// writeShards fills and writes every tensor. Workers fill chunks in
// parallel; the calling goroutine writes them in order. At most
// 2*workers+2 chunks exist at once, which bounds memory.
func writeShards(dir string, files []string, plans []*tensorPlan, meta map[string]string, workers int, progress func(done int64)) (err error) {
	inFlight := 2*workers + 2
	// Buffers never exceed the largest tensor, which keeps tiny models cheap.
	bufBytes := int64(0)
	for _, p := range plans {
		bufBytes = max(bufBytes, min(p.bytes, chunkBytes))
	}
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- nil // allocated on first use
	}
	ordered := make(chan *chunk, inFlight)
	work := make(chan *chunk, inFlight)
	quit := make(chan struct{})

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scratch := make([]float32, bufBytes/2)
			for c := range work {
				c.p.fill.fill(c.buf, c.first, scratch)
				close(c.done)
			}
		}()
	}
	// The producer cuts tensors into chunks, in file order.
	go func() {
		defer close(ordered)
		defer close(work)
		for _, p := range plans {
			es := int64(p.spec.DType.Size())
			per := chunkBytes / es
			n := p.bytes / es
			for first := int64(0); first < n || (n == 0 && first == 0); first += per {
				var buf []byte
				select {
				case buf = <-free:
				case <-quit:
					return
				}
				size := min(per, n-first) * es
				if cap(buf) < int(size) {
					buf = make([]byte, bufBytes)
				}
				c := &chunk{p: p, first: first, buf: buf[:size], done: make(chan struct{})}
				ordered <- c
				work <- c
				if n == 0 {
					break
				}
			}
		}
	}()
	defer func() {
		if err != nil {
			close(quit)
			for c := range ordered { // unblock the producer
				<-c.done
			}
		}
		wg.Wait()
	}()

	byShard := make([][]safetensors.TensorSpec, len(files))
	for _, p := range plans {
		byShard[p.shard] = append(byShard[p.shard], p.spec)
	}
	var w *safetensors.Writer
	var written int64
	cur := -1
	closeCur := func() error {
		if w == nil {
			return nil
		}
		e := w.Close()
		w = nil
		return e
	}
	for c := range ordered {
		<-c.done
		if c.first == 0 {
			if c.p.shard != cur {
				if err := closeCur(); err != nil {
					return err
				}
				cur = c.p.shard
				w, err = safetensors.Create(filepath.Join(dir, files[cur]), meta, byShard[cur])
				if err != nil {
					return err
				}
			}
			if err := w.Begin(c.p.spec.Name); err != nil {
				return errors.Join(err, closeCur())
			}
		}
		if _, err := w.Write(c.buf); err != nil {
			return errors.Join(err, closeCur())
		}
		written += int64(len(c.buf))
		if progress != nil {
			progress(written)
		}
		free <- c.buf
	}
	return closeCur()
}
