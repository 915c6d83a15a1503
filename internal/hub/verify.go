package hub

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
)

// Verification names how a blob was checked.
const (
	VerifiedSHA256  = "sha256"   // LFS file: the ETag is the sha256 of the bytes
	VerifiedGitSHA1 = "git-sha1" // small file: the ETag is the git blob id
	VerifiedSize    = "size"     // an ETag of another form: only the size is known
)

// CorruptError reports a blob whose bytes do not match its id or size.
type CorruptError struct {
	Path string
	Why  string
}

func (e *CorruptError) Error() string { return e.Path + ": " + e.Why }

// verifyBlob checks the file at path against the blob id etag and the
// expected size (-1 unknown), and says how it was checked.
func verifyBlob(path, etag string, size int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if size >= 0 && st.Size() != size {
		return "", &CorruptError{path, fmt.Sprintf("%d bytes, want %d", st.Size(), size)}
	}
	var h hash.Hash
	method := VerifiedSize
	switch {
	case len(etag) == 64 && isLowerHex(etag):
		h, method = sha256.New(), VerifiedSHA256
	case len(etag) == 40 && isLowerHex(etag):
		// git hashes "blob <size>\x00" then the content.
		h, method = sha1.New(), VerifiedGitSHA1
		h.Write([]byte("blob " + strconv.FormatInt(st.Size(), 10) + "\x00"))
	}
	if h == nil {
		return method, nil
	}
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != etag {
		return "", &CorruptError{path, fmt.Sprintf("%s is %s, want %s", method, got, etag)}
	}
	return method, nil
}
