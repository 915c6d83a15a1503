// Package packfile reads and writes the repacked-weights file: weights a
// load transformed into the kernels' layout (AWQ INT4 tiles), stored beside
// the model so that the next load maps them instead of redoing the work.
//
// A file is used only for the model it was written from. Its key — the
// layout's name and, for each source file, its name, size, modification
// time, the target of its symbolic link (a hub cache names blobs by their
// SHA-256) and a SHA-256 over its first MiB (the safetensors header) and 16
// pages spread over the rest — must equal the key of the model being
// loaded; every section must lie inside the file; and every section's
// CRC-32C must match before a byte of it is used. That catches stale,
// truncated and corrupted files. A file, or the folder holding it, that
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
