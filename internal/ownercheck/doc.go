// Package ownercheck refuses files that another user could have written.
//
// A cache file decides what streamguard runs or trains on: repacked
// weights (internal/packfile), extracted features (internal/train). One
// planted in a shared folder (a --repack-cache or --cache-dir under /tmp)
// must not be used, however well formed. So a file, or the folder holding
// it, that someone other than this process's user (or root) owns, or that
// every user may write, is refused. Group-writable is allowed: volumes
// shared by a deployment's containers are often made so (Kubernetes'
// fsGroup).
package ownercheck
