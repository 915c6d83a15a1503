package safetensors

// DType is a safetensors element type, spelled as in the header.
type DType string

// The element types this package reads and writes. The sub-byte float
// formats (F4, F6_*) and complex types that newer writers know are
// rejected as unsupported.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"
)

// Size is the element size in bytes, or 0 for an unsupported dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case F8E4M3, F8E5M2, I8, U8, Bool:
		return 1
	}
	return 0
}

// Valid reports whether d is a supported dtype.
func (d DType) Valid() bool { return d.Size() > 0 }

func (d DType) String() string { return string(d) }
