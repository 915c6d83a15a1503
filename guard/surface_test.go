package guard

import (
	"go/importer"
	"go/token"
	"go/types"
	"strings"
	"testing"
)

// TestPublicSurfaceHasNoInternalTypes type-checks this package from source
// and walks every exported name, field, method, parameter and result: none
// may mention a type from an internal package, which an importer of guard
// could neither name nor build.
func TestPublicSurfaceHasNoInternalTypes(t *testing.T) {
	imp := importer.ForCompiler(token.NewFileSet(), "source", nil)
	pkg, err := imp.Import("github.com/streamguard/streamguard/guard")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[types.Type]bool{}
	var walk func(where string, typ types.Type)
	walk = func(where string, typ types.Type) {
		if seen[typ] {
			return
		}
		seen[typ] = true
		switch x := typ.(type) {
		case *types.Named:
			if p := x.Obj().Pkg(); p != nil && strings.Contains(p.Path(), "/internal/") {
				t.Errorf("%s uses %s.%s", where, p.Path(), x.Obj().Name())
				return
			}
			if x.Obj().Pkg() != pkg {
				return // the standard library
			}
			walk(where, x.Underlying())
			for i := range x.NumMethods() {
				if m := x.Method(i); m.Exported() {
					walk(where+"."+m.Name(), m.Type())
				}
			}
		case *types.Alias:
			walk(where, types.Unalias(x))
		case *types.Pointer:
			walk(where, x.Elem())
		case *types.Slice:
			walk(where, x.Elem())
		case *types.Array:
			walk(where, x.Elem())
		case *types.Map:
			walk(where, x.Key())
			walk(where, x.Elem())
		case *types.Chan:
			walk(where, x.Elem())
		case *types.Signature:
			for i := range x.Params().Len() {
				walk(where+" parameter", x.Params().At(i).Type())
			}
			for i := range x.Results().Len() {
				walk(where+" result", x.Results().At(i).Type())
			}
		case *types.Struct:
			for i := range x.NumFields() {
				if f := x.Field(i); f.Exported() {
					walk(where+"."+f.Name(), f.Type())
				}
			}
		case *types.Interface:
			for i := range x.NumMethods() {
				walk(where+"."+x.Method(i).Name(), x.Method(i).Type())
			}
		}
	}
	names := 0
	for _, name := range pkg.Scope().Names() {
		obj := pkg.Scope().Lookup(name)
		if !obj.Exported() {
			continue
		}
		names++
		walk(name, obj.Type())
	}
	if names < 20 {
		t.Fatalf("only %d exported names found: the walk did not see the package", names)
	}
}
