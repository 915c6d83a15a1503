// Package hub downloads model repositories from a Hugging Face–compatible
// hub into the standard cache layout, so that Python tools and streamguard
// share one copy of the files.
//
// # Protocol
//
// A pull asks the model API for the revision's commit and file list
// (GET {endpoint}/api/models/ORG/NAME/revision/REV?blobs=true), then, for
// each file, the file's metadata (HEAD {endpoint}/ORG/NAME/resolve/COMMIT/FILE,
// following only same-host redirects: a renamed repository). The metadata
// is in the headers: X-Repo-Commit, the blob id in X-Linked-Etag (large
// files kept in LFS: their sha256) or ETag (small files: their git blob
// sha1), the size in X-Linked-Size or Content-Length, and, for LFS files, a
// redirect to a CDN in Location. The bytes come from a GET on that location;
// an interrupted download resumes with a Range request.
//
// # Cache layout
//
//	$HF_HUB_CACHE (default $HF_HOME/hub, default ~/.cache/huggingface/hub)
//	└── models--ORG--NAME
//	    ├── blobs/ETAG                (the bytes; ETAG.incomplete while downloading)
//	    ├── refs/REV                  (the commit a branch or tag pointed to)
//	    └── snapshots/COMMIT/FILE  -> ../../blobs/ETAG
//
// Downloads take the same lock files as huggingface_hub
// ($HF_HUB_CACHE/.locks/models--ORG--NAME/ETAG.lock), so a Python process
// and streamguard never write one blob at once.
//
// # Verification
//
// A blob's name is its checksum: a 64-hex ETag is the sha256 of the file,
// a 40-hex one the git blob sha1. Every downloaded blob, and every blob
// found in the cache by a pull, is checked against it; a bad one is
// fetched again. No answer is read past the file's announced size (or
// the hub's 50 GB limit on a file when none was announced), and a pinned
// commit hash must be the commit the hub answers.
package hub
