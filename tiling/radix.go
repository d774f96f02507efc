package tiling

// LSD radix sorts for the pending buffers of sketches: a read merges
// hundreds of tiles' sorted runs into one accumulator, and sorting their
// concatenation by bytes costs a few passes over it, where a comparison sort
// costs log n. A pass whose byte is the same in every key is skipped, so
// keys that differ only in their low bytes take one or two passes.

// radixSort32 sorts a ascending, using tmp (grown as needed) as scratch, and
// returns the sorted slice (a or tmp) and the scratch.
func radixSort32(a, tmp []uint32) (sorted, scratch []uint32) {
	if len(a) < 64 {
		insertionSort32(a)
		return a, tmp
	}
	if cap(tmp) < len(a) {
		tmp = make([]uint32, len(a))
	}
	tmp = tmp[:len(a)]
	for shift := uint(0); shift < 32; shift += 8 {
		var count [256]int
		for _, k := range a {
			count[k>>shift&0xff]++
		}
		if count[a[0]>>shift&0xff] == len(a) {
			continue // every key has this byte
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, k := range a {
			b := k >> shift & 0xff
			tmp[count[b]] = k
			count[b]++
		}
		a, tmp = tmp, a
	}
	return a, tmp
}

func insertionSort32(a []uint32) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// radixSortBins sorts bins by key ascending (stable), like radixSort32.
func radixSortBins(a, tmp []quantileBin) (sorted, scratch []quantileBin) {
	if len(a) < 64 {
		for i := 1; i < len(a); i++ {
			for j := i; j > 0 && a[j].key < a[j-1].key; j-- {
				a[j], a[j-1] = a[j-1], a[j]
			}
		}
		return a, tmp
	}
	if cap(tmp) < len(a) {
		tmp = make([]quantileBin, len(a))
	}
	tmp = tmp[:len(a)]
	// Order-preserving for keys above −2^22 (quantile keys lie within ±2^21),
	// and small, so that the high bytes' passes are skipped.
	ukey := func(b quantileBin) uint64 { return uint64(b.key + 1<<22) }
	for shift := uint(0); shift < 64; shift += 8 {
		var count [256]int
		for _, b := range a {
			count[ukey(b)>>shift&0xff]++
		}
		if count[ukey(a[0])>>shift&0xff] == len(a) {
			continue
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, b := range a {
			d := ukey(b) >> shift & 0xff
			tmp[count[d]] = b
			count[d]++
		}
		a, tmp = tmp, a
	}
	return a, tmp
}
