package kernels

//go:generate sh -c "cd _asm && go run . -out ../kernels_amd64.s -stubs ../kernels_stubs_amd64.go -pkg kernels"
