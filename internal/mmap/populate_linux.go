package mmap

import "syscall"

const mapPopulate = syscall.MAP_POPULATE
