// Package mmap maps files read-only: the model weights (safetensors) and
// the repacked-weights file are read through the page cache, shared by
// every process that loads the same model, instead of being copied onto the
// heap. Systems without mmap get a copy read into memory.
package mmap
