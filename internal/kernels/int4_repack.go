package kernels

import "encoding/binary"

// Tile layout (see Int4Matrix): the 64-byte tile of block b covering inputs
// k0..k0+7 starts at qs[(b·K + k0)·8], since a block holds K/8 tiles in
// increasing k order across its groups. Word c of an AWQ row covers outputs
// 8c..8c+7, which are lanes 8·(c%2)..8·(c%2)+7 of block c/2, so its lanes
// fill the half tile at qs[(c/2·K + k0)·8 + 32·(c%2)], lane l at byte 4l.
//
// The nibble order 0,2,4,6,1,3,5,7 puts outputs 0,4,1,5 in the even
// nibbles of a word and 2,6,3,7 in the odd ones; awqEvenLane and awqOddLane
// name the lane that byte p of the even-nibble and odd-nibble halves feeds.
var (
	awqEvenLane = [4]int{0, 4, 1, 5}
	awqOddLane  = [4]int{2, 6, 3, 7}
)

// repackAWQCodes fills the zeroed tiles qs from qweight [K][words], eight
// rows (one tile) and one word at a time.
func repackAWQCodes(qs []byte, qweight []int32, K, words int) {
	const lo4 = 0x0F0F0F0F
	// A band of awqBand words spans one cache line of every row and
	// writes awqBand/2 sequential tile streams; sweeping all K rows per band
	// keeps both sides streaming instead of scattering each row's stores
	// K·8 bytes apart, which aliases them onto a few cache sets.
	const awqBand = 16
	for cb := 0; cb < words; cb += awqBand {
		n := min(awqBand, words-cb)
		for k0 := 0; k0 < K; k0 += 8 {
			at := k0*words + cb
			r0, r1, r2, r3 := qweight[at:][:n], qweight[at+words:][:n], qweight[at+2*words:][:n], qweight[at+3*words:][:n]
			r4, r5, r6, r7 := qweight[at+4*words:][:n], qweight[at+5*words:][:n], qweight[at+6*words:][:n], qweight[at+7*words:][:n]
			for i := range r0 {
				w0, w1, w2, w3 := uint32(r0[i]), uint32(r1[i]), uint32(r2[i]), uint32(r3[i])
				w4, w5, w6, w7 := uint32(r4[i]), uint32(r5[i]), uint32(r6[i]), uint32(r7[i])
				c := cb + i
				// Byte p of x_j packs even nibble p of rows k0+j (low) and
				// k0+4+j (high); the upper 32 bits do the same for the odd
				// nibbles. Lane bytes are then a 4×4 byte transpose of x_0..x_3.
				x0 := uint64(w0&lo4|(w4&lo4)<<4) | uint64(w0>>4&lo4|(w4>>4&lo4)<<4)<<32
				x1 := uint64(w1&lo4|(w5&lo4)<<4) | uint64(w1>>4&lo4|(w5>>4&lo4)<<4)<<32
				x2 := uint64(w2&lo4|(w6&lo4)<<4) | uint64(w2>>4&lo4|(w6>>4&lo4)<<4)<<32
				x3 := uint64(w3&lo4|(w7&lo4)<<4) | uint64(w3>>4&lo4|(w7>>4&lo4)<<4)<<32
				const m8, m16 = 0x00FF00FF00FF00FF, 0x0000FFFF0000FFFF
				t0 := x0&m8 | (x1&m8)<<8 // bytes: x0[0] x1[0] x0[2] x1[2]
				t1 := x0>>8&m8 | x1&^m8  // bytes: x0[1] x1[1] x0[3] x1[3]
				t2 := x2&m8 | (x3&m8)<<8
				t3 := x2>>8&m8 | x3&^m8
				c0 := t0&m16 | (t2&m16)<<16 // c_p: byte p of x0..x3
				c1 := t1&m16 | (t3&m16)<<16
				c2 := t0>>16&m16 | t2&^m16
				c3 := t1>>16&m16 | t3&^m16
				// c_p holds lane awqEvenLane[p] low, awqOddLane[p] high, so
				// each 8-byte store below covers two adjacent lanes.
				const lo32 = 0xFFFFFFFF
				dst := qs[(c/2*K+k0)*8+32*(c%2):][:32]
				binary.LittleEndian.PutUint64(dst[0:], c0&lo32|c2<<32)   // lanes 0, 1
				binary.LittleEndian.PutUint64(dst[8:], c0>>32|c2&^lo32)  // lanes 2, 3
				binary.LittleEndian.PutUint64(dst[16:], c1&lo32|c3<<32)  // lanes 4, 5
				binary.LittleEndian.PutUint64(dst[24:], c1>>32|c3&^lo32) // lanes 6, 7
			}
		}
	}
}

// repackAWQMeta fills the zeroed records meta with the float16 scales and
// the zero points (8 for a nil qzeros) of every block and group; lanes past
// N keep scale and zero 0.
func repackAWQMeta(meta []byte, qzeros []int32, scales []uint16, groups, N int) {
	words := N / 8
	for g := range groups {
		sg := scales[g*N : (g+1)*N]
		for c := range words {
			b, half := c/2, c%2
			rec := meta[(b*groups+g)*int4Meta:][:int4Meta]
			for l, s := range sg[8*c : 8*c+8] {
				binary.LittleEndian.PutUint16(rec[2*(8*half+l):], s)
			}
			z := rec[32+8*half:][:8]
			if qzeros == nil {
				for l := range z {
					z[l] = 8
				}
				continue
			}
			w := uint32(qzeros[g*words+c])
			for p := range 4 {
				z[awqEvenLane[p]] = byte(w >> (8 * p) & 0xF)
				z[awqOddLane[p]] = byte(w >> (8*p + 4) & 0xF)
			}
		}
	}
}
