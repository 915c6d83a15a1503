//go:build unix && !linux

package mmap

// mapPopulate: only Linux has MAP_POPULATE; elsewhere pages fault in as read.
const mapPopulate = 0
