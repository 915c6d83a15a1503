// Package packfile reads and writes the repacked-weights file: weights a
// load transformed into the kernels' layout (AWQ INT4 tiles), stored beside
// the model so that the next load maps them instead of redoing the work.
//
// A file is used only for the model it was written from. Its key — the
// layout's name and, for each source file, its name, size, modification
// time, the target of its symbolic link (a hub cache names blobs by their
// SHA-256) and a SHA-256 over its first MiB (the safetensors header), one
// 4 KiB page of every further MiB and the first page of every tensor the
// pack is made from — must equal the key of the model
// being loaded; every section must lie inside the file; and every
// section's CRC-32C must match before a byte of it is used. That catches
// stale, truncated and corrupted files.
//
// What the key can and cannot catch. Hashing whole checkpoints would cost
// more than the repacking the file saves, so the key samples the sources:
// a page a MiB and a page a tensor, about 0.4% of their bytes. Weights
// replaced or rewritten with their size and modification time kept (cp -p,
// rsync -a, tar, an image build's fixed timestamps) are caught when the
// change spans a MiB or more, or reaches the first page of a tensor the
// pack holds, as replacing any one of them does; an edit of a few bytes
// between two samples is not. The key describes the files the load has
// open: a file renamed over one of them while the model loads leaves the
// weights repacked in memory, not cached. The key holds nothing of where the
// file lives (no inode, device or status change time), so a file prepared
// in an image build, or on a volume, stays valid when the image is pulled
// onto another host or the volume mounted elsewhere. A file written when
// the key sampled 16 pages in all, or no tensor's first page, is stale for
// this version and rebuilt once. A file, or the folder holding it, that
// another user owns or that every user may write is refused outright (on
// systems with owners): a folder shared with other users must not let them
// choose the weights. It does not defend against someone who can write the
// model's folder: they could change the weights themselves.
//
// Layout: the 8-byte magic, the header's length (uint64, little-endian),
// the header's CRC-32C (uint32), the header (JSON), then the sections, each
// at an offset that is a multiple of 4096 so that a mapped section is
// page-aligned.
package packfile
