// Package folio writes files in pieces that the page cache can keep as
// 2 MiB folios. Linux filesystems with large folios (ext4 since 6.16, XFS)
// size the folios of a written range by the write call that covers it: a
// file written as each network read or small buffer returns is cached in
// small folios, and every later mapping of it maps it 4 KiB at a time — on
// a virtual machine about 2 µs for the first read through each page-table
// entry, a fifth of a second for a 1.2 GB checkpoint read whole at its
// first step (docs/BENCHMARKS.md). Written in pieces that start and end at
// multiples of 4 MiB of the file, the same bytes are cached in 2 MiB folios
// and mapped 2 MiB at a time.
package folio

import "io"

// Chunk is the size of each write, and the file offsets its pieces are
// aligned to: two 2 MiB folios.
const Chunk = 4 << 20

// Writer buffers what is written to w and writes it in pieces that end at
// multiples of Chunk of the file (the first piece ends at the first such
// multiple after the offset the writer starts at). Flush writes the rest.
type Writer struct {
	w   io.Writer
	buf []byte
	n   int   // bytes buffered
	lim int   // bytes that end the current piece
	err error // the first write error; every later call returns it
}

// NewWriter returns a Writer to w, whose next byte lands at file offset off.
func NewWriter(w io.Writer, off int64) *Writer {
	return &Writer{w: w, buf: make([]byte, Chunk), lim: Chunk - int(off%Chunk)}
}

// Write buffers p, writing every piece it completes.
func (b *Writer) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		if b.err != nil {
			return done, b.err
		}
		c := copy(b.buf[b.n:b.lim], p)
		b.n += c
		done += c
		p = p[c:]
		if b.n == b.lim {
			b.flush()
		}
	}
	return done, b.err
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	if b.err == nil && b.n > 0 {
		b.flush()
	}
	return b.err
}

func (b *Writer) flush() {
	n, err := b.w.Write(b.buf[:b.n])
	if err == nil && n < b.n {
		err = io.ErrShortWrite
	}
	if err != nil {
		b.err = err
		return
	}
	b.n, b.lim = 0, Chunk
}
