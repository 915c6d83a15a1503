// Package safetensors reads and writes the safetensors checkpoint format,
// single files and sharded model folders.
//
// # Format
//
// A file is an 8-byte little-endian unsigned length N, then N bytes of
// UTF-8 JSON (the header), then the data buffer:
//
//	{"__metadata__": {"format": "pt"},
//	 "model.norm.weight": {"dtype": "BF16", "shape": [1024], "data_offsets": [0, 2048]},
//	 ...}
//
// data_offsets are [begin, end) byte offsets relative to the start of the data
// buffer, so the buffer starts at byte 8+N. Writers pad the header with
// spaces so that 8+N is a multiple of 8; the data buffer then starts 8-byte
// aligned and every tensor whose offset is a multiple of its element size
// can be viewed in place. Tensor bytes are stored row-major, little-endian.
// The optional __metadata__ object maps strings to strings.
//
// A sharded folder adds model.safetensors.index.json, whose weight_map
// names the shard that holds each tensor.
//
// # Validation
//
// [ParseHeader] is a pure function over the header bytes and rejects
// anything a reader could trip over later: a header over [MaxHeaderSize],
// invalid UTF-8 or JSON, trailing bytes other than padding, duplicate keys,
// unknown dtypes, negative or overflowing shapes, a byte size that is not
// numel × element size, offsets outside the data buffer and overlapping
// tensors. Gaps between tensors are allowed. Every error is an [*Error]
// naming the file and, where there is one, the tensor.
//
// # Memory mapping and zero copy
//
// [Open] reads only the header with ordinary reads and then maps the whole
// file read-only (on unix; other systems read the file into memory). Pages
// are faulted in only when a tensor's bytes are touched, so opening a 16 GB
// folder costs a few header reads and no resident memory, and several
// processes share one page-cache copy of the weights.
//
// [Tensor.Data] and the typed views ([Tensor.F32], [Tensor.U16],
// [Tensor.I32], ...) alias the mapping: they are valid until the [File] is
// closed, and writing through them faults (the mapping is read-only). A
// typed view is a reinterpretation of the bytes, which is correct only on a
// little-endian host (amd64, arm64 and every other platform Go targets
// today except the big-endian ones); on a big-endian host, or when the
// tensor's address is not aligned for its element type, the views decode
// into a new slice instead, so the result is always correct and only the
// aliasing differs. If the file is truncated by another process while
// mapped, touching the lost pages raises SIGBUS; checkpoints are expected
// to be immutable while served.
//
// # Writing
//
// [Create] takes every tensor's name, dtype and shape up front, lays the
// tensors out back to back in the given order, writes the header and then
// accepts the tensor bytes in that order, whole ([Writer.WriteTensor]) or
// streamed in chunks ([Writer.Begin] and [Writer.Write], or
// [Writer.WriteTensorFrom]), so multi-gigabyte tensors never need to be held
// in memory. [WriteFile] is the one-call form for small files and
// [WriteIndex] writes the index of a sharded folder.
package safetensors
